"""The plant model: the default plant reads as documented, and a bad plant is refused naming the field."""
from __future__ import annotations

import copy

import pytest
import yaml

from simulator import plant

DEFAULT = yaml.safe_load(plant.DEFAULT_PLANT.read_text())


def broken(change) -> dict:
    document = copy.deepcopy(DEFAULT)
    change(document)
    return document


def test_the_default_plant_has_two_lines_twelve_units_three_products_and_a_two_level_bom():
    model = plant.load()
    assert [len(line.work_units) for line in model.lines] == [6, 6]
    assert len(model.products) == 3
    products = {p.product_id for p in model.products}
    assembled_from_products = [p for p in model.products if any(b.material_id in products for b in p.bom)]
    assert assembled_from_products, "no product consumes another product"
    assert all(model.product(b.material_id).bom for p in assembled_from_products for b in p.bom
               if b.material_id in products)


def test_unit_overrides_are_merged_over_the_defaults():
    model = plant.load()
    press01 = next(u for u in model.work_units if u.unit_id == "press01")
    cut01 = next(u for u in model.work_units if u.unit_id == "cut01")
    assert press01.failures.mtbf_hours == 2.5 and press01.failures.reasons == cut01.failures.reasons
    assert cut01.failures.mtbf_hours == 5


@pytest.mark.parametrize(("change", "path", "rule"), [
    (lambda d: d["lines"][1]["work_units"][0].update(failures={"mtbf_hours": -2}),
     "lines[1].work_units[0].failures.mtbf_hours", "> 0"),
    (lambda d: d["products"][0]["routing"][0].update(work_unit="asm01"),
     "products[0].routing[0].work_unit", "is not a work unit of line"),
    (lambda d: d["products"][1]["bom"][0].update(material="UNOBTAINIUM"), "products[1].bom[0].material", "names no"),
    (lambda d: d["plant"].update(time_zone="Mars/Olympus"), "plant.time_zone", "IANA"),
    (lambda d: d["lines"][0]["work_units"][1].update(speed="fast"), "lines[0].work_units[1].speed", "not a known field"),
    (lambda d: d["shifts"][0].update(start="25:00"), "shifts[0].start", "time of day"),
    (lambda d: d["products"][0]["inspection"]["characteristics"][0].update(target=43.0),
     "products[0].inspection.characteristics[0].target", "between lsl"),
    (lambda d: d["maintenance_plans"][0]["trigger"].pop("interval_hours"),
     "maintenance_plans[0].trigger.interval_hours", "required for a calendar trigger"),
    (lambda d: d["lines"][0]["orders"][0].update(product="PUMP-P100"), "lines[0].orders[0].product", "not a product of this line"),
    (lambda d: d["lines"][1]["work_units"][1].update(id="cut01"), "lines[1].work_units[1].id", "used twice"),
])
def test_a_bad_plant_is_refused_naming_the_field_and_the_rule(change, path, rule):
    with pytest.raises(plant.PlantError) as error:
        plant.parse(broken(change))
    assert error.value.path == path
    assert str(error.value).startswith(f"{path}: ") and rule in str(error.value)


def test_a_missing_section_is_named():
    with pytest.raises(plant.PlantError, match=r"^lines: is required"):
        plant.parse(broken(lambda d: d.pop("lines")))

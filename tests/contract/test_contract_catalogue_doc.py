"""docs/event-catalogue.md is generated from the catalogue and must be current."""

from services.common import catalogue_doc


def test_the_committed_event_catalogue_is_current():
    assert catalogue_doc.main(["--check"]) == 0, "run: python -m services.common.catalogue_doc"


def test_check_fails_when_the_document_is_stale(tmp_path, capsys):
    stale = tmp_path / "event-catalogue.md"
    stale.write_text("# Event catalogue\n\nout of date\n")
    assert catalogue_doc.main(["--check", "--output", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err


def test_the_document_covers_every_topic_event_and_field(catalogue):
    text = catalogue_doc.render(catalogue)
    for topic in catalogue.topics.values():
        assert f"### `{topic.name}`" in text
    for event_type, schema in catalogue.schemas.items():
        assert f"\n## {event_type}\n" in text
        for avro_field in schema["fields"]:
            assert f"`{avro_field['name']}`" in text
    assert "`bom[].quantity_per_unit` | double | required | exclusiveMinimum 0 |" in text
    assert "`RUNNING`, `IDLE`" in text

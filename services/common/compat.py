"""Schema compatibility against the last release, both directions; `--release` takes the snapshot.

    python -m services.common.compat            # check; exit 1 naming each incompatible event type
    python -m services.common.compat --release  # copy the current schemas into schemas/released/

"Backward": a consumer with the current schema reads data written with the released one.
"Forward": a consumer still on the released schema reads data written with the current one.
Both must hold (ARCHITECTURE.md §2.7). A new event type with no released version is fine; an
event type removed since the release is not, nor is removing allowed values of an enumeration
(old data still holds them). Avro's own rules come from Apache avro's ReaderWriterCompatibilityChecker.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from services.common.catalogue import DEFAULT_SCHEMAS_DIR, RELEASED_DIR, Catalogue

BACKWARD = "backward"  # new reader, old writer
FORWARD = "forward"  # old reader, new writer


@dataclass(frozen=True)
class Incompatibility:
    event_type: str
    direction: str  # BACKWARD, FORWARD, "removed" or "allowed"
    detail: str

    def __str__(self) -> str:
        return f"{self.event_type}: {self.direction}: {self.detail}"


def check_pair(current: dict, released: dict, event_type: str | None = None) -> list[Incompatibility]:
    """Every incompatibility between a current and a released schema (raw JSON dicts)."""
    name = event_type or current.get("name", "?")
    new, old = _parse(current), _parse(released)
    problems = []
    for direction, reader, writer in ((BACKWARD, new, old), (FORWARD, old, new)):
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
        if result.compatibility is not SchemaCompatibilityType.compatible:
            where = ", ".join(sorted(result.locations))
            what = "; ".join(sorted(result.messages)) or ", ".join(i.value for i in result.incompatibilities)
            reader_is = "current" if direction == BACKWARD else "released"
            writer_is = "released" if direction == BACKWARD else "current"
            problems.append(Incompatibility(
                name, direction, f"a {reader_is} reader cannot read {writer_is} data: {what} (at {where})"
            ))
    for path, lost in _removed_allowed_values(current, released):
        problems.append(Incompatibility(name, "allowed", f"{path} no longer allows {sorted(lost)}"))
    return problems


def check(schemas_dir: Path | None = None) -> list[Incompatibility]:
    """Compare every current schema (and the envelope) with its released snapshot."""
    schemas_dir = Path(schemas_dir) if schemas_dir else DEFAULT_SCHEMAS_DIR
    catalogue = Catalogue.load(schemas_dir)
    current = dict(catalogue.schemas)
    if catalogue.envelope:
        current["Envelope"] = catalogue.envelope
    problems: list[Incompatibility] = []
    for name, path in sorted(_released(schemas_dir).items()):
        released = json.loads(path.read_text(encoding="utf-8"))
        if name not in current:
            problems.append(Incompatibility(name, "removed", f"released in {path} but no current schema"))
            continue
        problems.extend(check_pair(current[name], released, name))
    return problems


def release(schemas_dir: Path | None = None) -> list[Path]:
    """Replace the snapshot in schemas/released/ by the current schemas; README.md there is kept."""
    schemas_dir = Path(schemas_dir) if schemas_dir else DEFAULT_SCHEMAS_DIR
    Catalogue.load(schemas_dir)  # never release an inconsistent catalogue
    target = schemas_dir / RELEASED_DIR
    for old in target.glob("*/*.avsc"):
        old.unlink()
    written = []
    for source in _current_files(schemas_dir):
        destination = target / source.parent.name / source.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        written.append(destination)
    for folder in target.iterdir() if target.is_dir() else ():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return written


def _parse(raw: dict) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(raw))


def _current_files(schemas_dir: Path) -> Iterator[Path]:
    for path in sorted(schemas_dir.glob("*/*.avsc")):
        if path.parent.name != RELEASED_DIR:
            yield path


def _released(schemas_dir: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted((schemas_dir / RELEASED_DIR).glob("*/*.avsc"))}


def _removed_allowed_values(current: dict, released: dict, path: str = "") -> Iterator[tuple[str, set]]:
    """Enumerations are strings with an `allowed` attribute; Avro cannot see them shrink, so look here."""
    new_fields = {f["name"]: f for f in current.get("fields", [])}
    for old_field in released.get("fields", []):
        new_field = new_fields.get(old_field["name"])
        if new_field is None:
            continue
        where = f"{path}{old_field['name']}"
        old_allowed, new_allowed = old_field.get("allowed"), new_field.get("allowed")
        if old_allowed is not None:
            lost = set(old_allowed) - set(new_allowed or old_allowed)
            if lost:
                yield where, lost
        old_record, new_record = _nested_record(old_field["type"]), _nested_record(new_field["type"])
        if old_record and new_record:
            suffix = "[]." if _is_array(old_field["type"]) else "."
            yield from _removed_allowed_values(new_record, old_record, where + suffix)


def _nested_record(avro_type) -> dict | None:
    if isinstance(avro_type, list):
        return next((r for r in map(_nested_record, avro_type) if r), None)
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "record":
            return avro_type
        if avro_type.get("type") == "array":
            return _nested_record(avro_type["items"])
    return None


def _is_array(avro_type) -> bool:
    if isinstance(avro_type, list):
        return any(map(_is_array, avro_type))
    return isinstance(avro_type, dict) and avro_type.get("type") == "array"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.compat", description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="store_true", help="snapshot the current schemas into schemas/released/")
    parser.add_argument("--allow-incompatible", action="store_true",
                        help="with --release: release even if incompatible (a breaking release of the contract)")
    parser.add_argument("--schemas", type=Path, default=None, help="schemas directory (default: the repository's)")
    args = parser.parse_args(argv)
    problems = check(args.schemas)
    for problem in problems:
        print(f"INCOMPATIBLE {problem}", file=sys.stderr)
    if args.release:
        if problems and not args.allow_incompatible:
            print("not released: fix the incompatibilities or pass --allow-incompatible", file=sys.stderr)
            return 1
        written = release(args.schemas)
        print(f"released {len(written)} schemas into {(args.schemas or DEFAULT_SCHEMAS_DIR) / RELEASED_DIR}")
        return 0
    if problems:
        names = sorted({p.event_type for p in problems})
        print(f"{len(names)} incompatible event type(s): {', '.join(names)}", file=sys.stderr)
        return 1
    print("schemas compatible with the released snapshot (both directions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

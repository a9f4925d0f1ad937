"""`python -m simulator`: simulate a plant's shift and send it (ingest by default), or just count it.

Examples:
  python -m simulator                                  # the default plant, seed 1, to the local stack's ingest
  python -m simulator --plant my.yaml --seed 7 --rate 2000
  python -m simulator --target kafka --tag run42       # straight to Kafka, ids namespaced by a tag
  python -m simulator --target none --truth            # generate only; print the ground truth
  python -m simulator --target file --out shift.jsonl  # the events in ingest's wire format, one per line
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import date

from simulator import engine, plant, send, truth


def _stack_status() -> dict:
    from services.common import localstack

    return localstack.status(localstack.StackConfig.from_env())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--plant", default=str(plant.DEFAULT_PLANT), help="plant YAML (default: simulator/plants/default.yaml)")
    p.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same events")
    p.add_argument("--shift", action="append", metavar="SHIFT_ID", help="simulate only this shift of the plant (repeatable)")
    p.add_argument("--date", type=date.fromisoformat, help="the day to simulate (default: the plant's date)")
    p.add_argument("--tag", default="", help="namespace every id with this tag (fresh ids on shared topics)")
    p.add_argument("--target", choices=("ingest", "kafka", "file", "none"), default="ingest")
    p.add_argument("--url", help="ingest base URL (default: the local stack's)")
    p.add_argument("--token", help="ingest bearer token (default: the local stack's)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers for --target kafka (default: the local stack's)")
    p.add_argument("--registry", default=None, help="schema registry URL for --target kafka (default: the local stack's)")
    p.add_argument("--rate", type=float, default=0.0, help="events per second of wall time (0: as fast as possible)")
    p.add_argument("--batch", type=int, default=send.DEFAULT_BATCH, help="events per request or produce batch")
    p.add_argument("--out", help="output file for --target file")
    p.add_argument("--truth", action="store_true", help="print the ground truth (per unit and shift) as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        model = plant.load(args.plant)
    except plant.PlantError as error:
        print(f"plant {args.plant}: {error}", file=sys.stderr)
        return 2
    if args.shift:
        unknown = set(args.shift) - {s.shift_id for s in model.shifts}
        if unknown:
            print(f"--shift: the plant has no shift {sorted(unknown)[0]!r}", file=sys.stderr)
            return 2
        model = replace(model, shifts=tuple(s for s in model.shifts if s.shift_id in args.shift))
    if args.date:
        model = replace(model, day=args.date)
    started = time.monotonic()
    sim = engine.simulate(model, seed=args.seed, tag=args.tag)
    print(f"simulated {model.name}: {len(model.work_units)} work units, {len(sim.events)} events "
          f"in {time.monotonic() - started:.2f} s", file=sys.stderr)
    if args.target == "file":
        with open(args.out or "simulation.jsonl", "w") as out:
            for event in sim.events:
                out.write(json.dumps(event) + "\n")
    elif args.target in ("ingest", "kafka"):
        status = _stack_status() if not (args.url and args.token) and not args.bootstrap else {}

        def progress(done: int, total: int) -> None:
            print(f"\rsent {done}/{total}", end="", file=sys.stderr, flush=True)

        if args.target == "ingest":
            sent = send.to_ingest(sim.events, args.url or status["ingest"]["url"], args.token or status["ingest"]["token"],
                                  batch=args.batch, rate=args.rate, progress=progress)
        else:
            registry = args.registry if args.registry is not None else (status.get("registry", {}).get("url") or "")
            sent = send.to_kafka(sim.events, args.bootstrap or status["kafka"]["bootstrap"], registry,
                                 batch=args.batch, rate=args.rate, progress=progress)
        print(f"\n{sent.accepted} accepted, {sent.refused} refused in {sent.seconds:.1f} s "
              f"({sent.rate:.0f} events/s)", file=sys.stderr)
        for refusal in sent.refusals[:20]:
            print(f"  {refusal}", file=sys.stderr)
    if args.truth:
        rows = [{**e.as_dict(), "availability": _f(e.availability), "effectiveness": _f(e.effectiveness),
                 "quality_ratio": _f(e.quality_ratio), "oee": _f(e.oee)} for e in truth.shift_truth(sim)]
        print(json.dumps({"shifts": rows, "on_hand": [{"material_id": m, "location_id": loc, "quantity": q}
                                                      for (m, loc), q in truth.material_balance(sim).items()]},
                         default=str, indent=2))
    return 0


def _f(value) -> float | None:
    return None if value is None else float(value)


if __name__ == "__main__":
    sys.exit(main())

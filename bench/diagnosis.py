"""/logs on the corpus of real traces: per cause, how often the right one is named.

    .venv/bin/python bench/diagnosis.py [--corpus DIR] [--show missed,wrong,false]

Reads every `index*.jsonl` under the corpus (default tests/data/diagnosis/): one JSON object per
sample, with `file` (relative to the corpus) and `cause` (a cause id, or `none` for noise where
naming a cause would be a false alarm). Each sample is read by `/logs api --last 20`, as a user
would, with the sample as the service's only log and no incident, through the same dispatcher as
`oncall-bot run`. The causes named by all of its events are compared with the label:

- right: the label is among them (`also` counts those where another cause was named too);
- wrong: causes were named, but not the label;
- missed: no cause was named (an unknown error is shown without a guess);
- false alarm: a cause named on a `none` sample.

The goal (issue 11): right on at least 95% of the samples with a known cause, never wrong, no
false alarm.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import config as config_module  # noqa: E402
from bot.console import Terminal  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from commands import registry, sections  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "diagnosis"
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
NONE = "none"


@dataclass(frozen=True)
class Sample:
    path: Path
    cause: str
    shape: str


@dataclass(frozen=True)
class Outcome:
    sample: Sample
    named: tuple[str, ...]         # the causes named, newest event first
    failed: str | None = None      # the command did not answer (its message)

    @property
    def verdict(self) -> str:
        if self.failed is not None:
            return "failed"
        if self.sample.cause == NONE:
            return "false" if self.named else "quiet"
        if self.sample.cause in self.named:
            return "right"
        return "wrong" if self.named else "missed"


def samples(corpus: Path) -> list[Sample]:
    found = []
    for index in sorted(corpus.glob("index*.jsonl")):
        for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                found.append(Sample(corpus / entry["file"], entry["cause"], entry.get("shape") or "?"))
            except (ValueError, KeyError) as error:
                raise SystemExit(f"{index.name}:{number}: not a sample ({error})") from None
    return found


def diagnose(sample: Sample, work: Path) -> Outcome:
    config_path = work / "oncall.toml"
    config_path.write_text(f"[services.api]\nlogs = [{json.dumps(str(sample.path))}]\n", encoding="utf-8")
    config = config_module.load(config_path, registry(), sections(), required=True)
    runner = Terminal(SqliteStore(work / "oncall.db"), config, registry(), lambda: NOW)
    reply = runner.invoke("/logs api --last 20")
    if reply.outcome.value != "ok":
        return Outcome(sample, (), str(reply.data.get("message", reply.outcome.value)))
    named = tuple(event.cause.id for event in reply.data["events"] if event.cause is not None)
    return Outcome(sample, tuple(dict.fromkeys(named)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, action="append",
                        help="a corpus directory (may be given more than once; default tests/data/diagnosis)")
    parser.add_argument("--show", default="", help="list the samples of these verdicts: missed,wrong,false,failed")
    args = parser.parse_args()
    corpora = args.corpus or [CORPUS]
    all_samples = [sample for corpus in corpora for sample in samples(corpus)]
    if not all_samples:
        raise SystemExit(f"no samples under {', '.join(map(str, corpora))}")
    with tempfile.TemporaryDirectory(prefix="bench-diagnosis-") as work:
        outcomes = [diagnose(sample, Path(work)) for sample in all_samples]
    report(outcomes, set(filter(None, args.show.split(","))))


def report(outcomes: list[Outcome], show: set[str]) -> None:
    by_cause: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in outcomes:
        by_cause[outcome.sample.cause][outcome.verdict] += 1
        if outcome.verdict == "right" and len(outcome.named) > 1:
            by_cause[outcome.sample.cause]["also"] += 1
    print(f"{'cause':<28} {'samples':>7} {'right':>6} {'also':>5} {'wrong':>6} {'missed':>7} {'failed':>7}")
    for cause in sorted(c for c in by_cause if c != NONE):
        counts = by_cause[cause]
        print(f"{cause:<28} {sum(counts[v] for v in ('right', 'wrong', 'missed', 'failed')):>7} {counts['right']:>6} "
              f"{counts['also']:>5} {counts['wrong']:>6} {counts['missed']:>7} {counts['failed']:>7}")
    known = [o for o in outcomes if o.sample.cause != NONE]
    totals = Counter(o.verdict for o in known)
    noise = [o for o in outcomes if o.sample.cause == NONE]
    false_alarms = sum(1 for o in noise if o.verdict == "false")
    right_share = totals["right"] / len(known) if known else 0.0
    print(f"\nknown cause: {len(known)} samples, right {totals['right']} ({right_share:.1%}), "
          f"wrong {totals['wrong']}, missed {totals['missed']}, failed {totals['failed']}   "
          f"goal: right >= 95%, wrong 0")
    print(f"none:        {len(noise)} samples, false alarms {false_alarms}   goal: 0")
    missed_shapes = Counter(o.sample.shape for o in known if o.verdict in ("missed", "wrong", "failed"))
    if missed_shapes:
        print("not right, by shape: " + ", ".join(f"{shape} {n}" for shape, n in missed_shapes.most_common()))
    for outcome in outcomes:
        if outcome.verdict in show:
            named = ", ".join(outcome.named) or outcome.failed or "-"
            print(f"  {outcome.verdict:<7} {outcome.sample.cause:<28} {named:<40} {outcome.sample.path}")


if __name__ == "__main__":
    main()

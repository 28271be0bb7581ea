"""`siamese-tfx data-report`: one run's data on one self-contained HTML page, for humans.

The page shows the data validation verdict (the gate's anomalies and every measured quantity
with its bounds: class balance, split sizes, drift), the quarantine report (each input that did
not become an example, with its file, row and reason) and the TFDV statistics of every split.
It needs no network: no script, no stylesheet or font is fetched (`--with-facets` appends TFDV's
Facets Overview, which loads its code from the web).

It reads the run from ML Metadata, so it also reports a run that stopped: PairExampleGen and
the gate keep their reports next to their output folders when they stop the run.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from siamese_tfx.pipeline import run_metadata


METADATA_FILE = "metadata.sqlite"
REPORT_FILE = "data-report.html"


@dataclass
class RunData:
    """What the page shows about one run."""

    run_id: str
    states: dict[str, str] = field(default_factory=dict)  # component -> state
    verdict: Optional[Any] = None  # components.validation_gate.executor.Verdict
    verdict_source: str = ""
    quarantine: list[dict[str, str]] = field(default_factory=list)
    quarantine_summary: dict[str, Any] = field(default_factory=dict)
    quarantine_source: str = ""
    statistics: dict[str, Any] = field(default_factory=dict)  # split -> DatasetFeatureStatistics
    statistics_source: str = ""


def find_metadata(path: str) -> str:
    """The ML Metadata file of a run output folder (`<dir>/metadata.sqlite`) or of a pipeline
    root inside one (`<dir>/../metadata.sqlite`), or `path` itself when it is that file."""
    path = os.path.abspath(path)
    for candidate in (path, os.path.join(path, METADATA_FILE),
                      os.path.join(os.path.dirname(path), METADATA_FILE)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"no ML Metadata ({METADATA_FILE}) in {path} or its parent: give the run's output "
        "folder (siamese-tfx run --output-dir) or its pipeline root")


def collect(metadata_path: str, search_roots: tuple[str, ...] = (),
            run_id: Optional[str] = None) -> RunData:
    """Reads run `run_id` (default: the latest) from ML Metadata and the artifacts it names.

    `search_roots` are pipeline roots to look in for the reports of components that stopped
    the run (their outputs are not in ML Metadata).
    """
    from tfx.types.standard_artifacts import ExampleStatistics

    from siamese_tfx.components.pair_example_gen import executor as example_gen_lib
    from siamese_tfx.components.validation_gate import executor as gate_lib
    from siamese_tfx.pipeline import pipeline as pipeline_lib

    run = run_metadata.read_run(run_metadata.sqlite_connection(metadata_path, read_only=True),
                                run_id=run_id)
    data = RunData(run_id=run.run_id)
    roots = list(search_roots) + run.pipeline_roots()
    data.states = {name: node.state for name, node in run.nodes.items()}

    example_gen = run.nodes.get(pipeline_lib.EXAMPLE_GEN)
    if example_gen is not None:
        report = example_gen_lib.read_quarantine(example_gen.outputs, roots,
                                                 pipeline_lib.EXAMPLE_GEN, example_gen.execution.id)
        if report is not None:
            data.quarantine, data.quarantine_summary = report.rows, report.summary
            data.quarantine_source = report.folder

    statistics_gen = run.nodes.get(pipeline_lib.STATISTICS_GEN)
    if statistics_gen is not None:
        for a in statistics_gen.outputs:
            stats = ExampleStatistics()
            stats.set_mlmd_artifact(a)
            for split, proto in gate_lib.read_statistics(stats).items():
                data.statistics[split] = proto.datasets[0]
            data.statistics_source = a.uri

    gate = run.nodes.get(pipeline_lib.VALIDATION_GATE)
    if gate is not None:
        outcome = gate_lib.read_outcome(gate.outputs, roots, pipeline_lib.VALIDATION_GATE,
                                        gate.execution.id)
        data.verdict, data.verdict_source = outcome.verdict, outcome.verdict_path
    return data


# ---- HTML -----------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px;
  border-bottom: 2px solid #d0d4da; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.meta { color: #555; }
 table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #c9ced6; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { padding: 12px 16px; border-radius: 6px; font-size: 17px; font-weight: 600;
  margin: 12px 0; } .stopped { background: #fde2e1; color: #8a1212; border: 2px solid #d33; }
.overridden { background: #fff1cc; color: #6b4d00; border: 2px solid #e0a800; }
.passed { background: #dff5e3; color: #11572a; border: 2px solid #2e9e50; }
.unknown { background: #eceff3; color: #333; border: 2px solid #9aa3ad; }
tr.bad td { background: #fff0f0; } .ok { color: #11572a; }
.fail { color: #b00020; font-weight: 600; }
svg.hist rect { fill: #4a78c2; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[str]], row_classes: Optional[list[str]] = None,
           numeric: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>"
                        for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _histogram_svg(buckets: list[tuple[str, float]], width: int = 220, height: int = 44) -> str:
    if not buckets:
        return ""
    top = max(count for _, count in buckets) or 1.0
    bar = width / len(buckets)
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - height * count / top:.1f}" '
        f'width="{max(bar - 1, 1):.1f}" height="{height * count / top:.1f}">'
        f"<title>{_e(label)}: {count:g}</title></rect>"
        for i, (label, count) in enumerate(buckets))
    return (f'<svg class="hist" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{rects}</svg>')


def _verdict_html(data: RunData) -> str:
    from siamese_tfx.pipeline import pipeline as pipeline_lib

    verdict = data.verdict
    gate_state = data.states.get(pipeline_lib.VALIDATION_GATE)
    if verdict is None:
        stopped_at = [n for n, s in data.states.items() if s == "FAILED"]
        text = ("Data validation did not run" + (f": the run stopped at {', '.join(stopped_at)}"
                                                 if stopped_at else ""))
        return f'<div class="verdict unknown">{_e(text)}</div>'
    count = len(verdict.anomalies)
    if verdict.blocked or gate_state == "FAILED":
        cls, text = "stopped", (f"Data validation STOPPED the run: {count} anomaly(ies); "
                                "nothing was transformed or trained")
    elif count:
        cls, text = "overridden", (f"{count} anomaly(ies) OVERRIDDEN (--allow-anomalies): the run "
                                   "trained on this data")
    else:
        cls, text = "passed", "Data validation passed: no anomalies"
    out = [f'<div class="verdict {cls}">{_e(text)}</div>']
    if count:
        out.append(_table(
            ["split", "feature", "check", "anomaly"],
            [[_e(a.split), _e(a.feature or "(split)"), _e(a.check), _e(a.description)]
             for a in verdict.anomalies],
            ["bad"] * count))
    return "\n".join(out)


def _measurements_html(data: RunData) -> str:
    if data.verdict is None or not data.verdict.measurements:
        return "<p>No measurements.</p>"
    rows, classes = [], []
    for m in data.verdict.measurements:
        if m.lower is not None and m.upper is not None:
            bounds = f"[{m.lower:g}, {m.upper:g}]"
        else:
            bounds = f"≥ {m.lower:g}" if m.lower is not None else f"≤ {m.upper:g}"
        ok = '<span class="ok">ok</span>' if m.ok else '<span class="fail">OUT OF BOUNDS</span>'
        rows.append([_e(m.split), _e(m.name), f"{m.value:.4g}", _e(bounds), ok])
        classes.append("" if m.ok else "bad")
    note = ("<p class=\"meta\">Drift measured against the previous accepted run: "
            f"{_e(data.verdict.previous_result)}</p>" if data.verdict.previous_result else
            "<p class=\"meta\">No previous accepted run: drift not measured.</p>")
    return _table(["split", "quantity", "value", "bounds", ""], rows, classes, (2,)) + note


def _quarantine_html(data: RunData) -> str:
    if not data.quarantine_source:
        return "<p>No quarantine report (PairExampleGen did not run).</p>"
    s = data.quarantine_summary
    pairs = s.get("pairs", {})
    facts = _table(
        ["inputs", "unit", "quarantined", "limit", "train pairs", "eval pairs"],
        [[_e(s.get("inputs")), _e(s.get("input_unit")), _e(s.get("quarantined")),
          _e(s.get("max_quarantined")), _e(pairs.get("train")), _e(pairs.get("eval"))]],
        numeric=(0, 2, 3, 4, 5))
    if not data.quarantine:
        return facts + "<p>Nothing quarantined.</p>"
    rows = [[_e(q["source"]), _e(q["row"]), _e(q["item"]), _e(q["reason"])]
            for q in data.quarantine]
    return (facts + _table(["file", "row", "item", "reason"], rows, numeric=(1,))
            + f'<p class="meta">Report: {_e(data.quarantine_source)}</p>')


def _feature_rows(dataset) -> tuple[list[list[str]], list[list[str]]]:
    numeric, other = [], []
    for f in dataset.features:
        name = ".".join(f.path.step) or f.name
        if f.HasField("num_stats"):
            n = f.num_stats
            common = n.common_stats
            buckets = [(f"{b.low_value:g}-{b.high_value:g}", b.sample_count)
                       for h in n.histograms if h.type == h.STANDARD for b in h.buckets]
            numeric.append([_e(name), f"{common.num_non_missing}", f"{common.num_missing}",
                            f"{n.mean:.4g}", f"{n.std_dev:.4g}", f"{n.min:g}", f"{n.max:g}",
                            _histogram_svg(buckets)])
        elif f.HasField("string_stats"):
            st = f.string_stats
            common = st.common_stats
            custom = {c.name: c for c in f.custom_stats}
            extra = []
            if "image_format_histogram" in custom:
                buckets = custom["image_format_histogram"].rank_histogram.buckets
                formats = ", ".join(f"{b.label or 'not an image'}: {b.sample_count:g}"
                                    for b in buckets)
                extra.append(f"image formats: {formats}")
            for key in ("image_max_width", "image_max_height"):
                if key in custom:
                    extra.append(f"{key}: {custom[key].num:g}")
            if "domain_info" in custom:
                extra.append(f"domain: {custom['domain_info'].str}")
            top = ", ".join(f"{v.value[:40]} ({v.frequency:g})" for v in st.top_values[:3])
            other.append([_e(name), f"{common.num_non_missing}", f"{common.num_missing}",
                          f"{st.unique}", f"{st.avg_length:.4g}",
                          _e(top if "image_format_histogram" not in custom and
                             "__BYTES_VALUE__" not in top else "(binary)"),
                          _e("; ".join(extra))])
    return numeric, other


def _statistics_html(data: RunData) -> str:
    if not data.statistics:
        return "<p>No statistics (StatisticsGen did not run).</p>"
    out = []
    for split, dataset in sorted(data.statistics.items()):
        out.append(f"<h3>Split {_e(split)}: {dataset.num_examples} examples</h3>")
        numeric, other = _feature_rows(dataset)
        if numeric:
            out.append(_table(["numeric feature", "count", "missing", "mean", "std", "min",
                               "max", "histogram"], numeric, numeric=(1, 2, 3, 4, 5, 6)))
        if other:
            out.append(_table(["bytes / string feature", "count", "missing", "unique",
                               "avg length", "top values", "domain statistics"], other,
                              numeric=(1, 2, 3, 4)))
    out.append(f'<p class="meta">Statistics: {_e(data.statistics_source)}</p>')
    return "\n".join(out)


def render(data: RunData, facets_html: str = "") -> str:
    """The report page."""
    from siamese_tfx.pipeline import pipeline as pipeline_lib

    order = {name: i for i, name in enumerate(pipeline_lib.COMPONENT_ORDER)}
    states = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in sorted(
        data.states.items(), key=lambda kv: (order.get(kv[0], -1), kv[0])))
    sections = [
        f"<h1>Data report: run {_e(data.run_id)}</h1>",
        f'<p class="meta">Generated {_e(time.strftime("%Y-%m-%d %H:%M:%S %Z"))}. '
        f"Components: {states}</p>",
        "<h2>Data validation</h2>", _verdict_html(data),
        "<h2>Checks: class balance, split sizes, drift</h2>", _measurements_html(data),
        "<h2>Quarantined inputs</h2>", _quarantine_html(data),
        "<h2>Statistics</h2>", _statistics_html(data),
    ]
    if facets_html:
        sections += ["<h2>Facets Overview</h2>", facets_html]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Data report {_e(data.run_id)}</title><style>{_CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def _facets(data: RunData) -> str:
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import statistics_pb2

    if not data.statistics:
        return ""
    splits = sorted(data.statistics)
    lists = []
    for split in splits[:2]:
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        stats.datasets.add().CopyFrom(data.statistics[split])
        lists.append(stats)
    return tfdv.utils.display_util.get_statistics_html(
        lists[0], lists[1] if len(lists) > 1 else None, lhs_name=splits[0],
        rhs_name=splits[1] if len(splits) > 1 else "")


def write_report(path: str, output: Optional[str] = None, run_id: Optional[str] = None,
                 with_facets: bool = False) -> str:
    """Writes the data report of a run and returns its path.

    Args:
      path: the run's output folder (holding metadata.sqlite), its pipeline root, or the
        metadata file.
      output: the HTML file to write (default: `<output folder>/data-report.html`).
      run_id: the run (default: the latest).
      with_facets: also embed TFDV's Facets Overview (loads its code from the web).
    """
    metadata_path = find_metadata(path)
    output_dir = os.path.dirname(metadata_path)
    roots = (os.path.abspath(path), os.path.join(output_dir, "pipeline"))
    data = collect(metadata_path, roots, run_id)
    page = render(data, _facets(data) if with_facets else "")
    output = output or os.path.join(output_dir, REPORT_FILE)
    with open(output, "w", encoding="utf-8") as f:
        f.write(page)
    return output


def data_report_command(args: argparse.Namespace) -> int:
    try:
        written = write_report(args.path, args.output, args.run_id, args.with_facets)
    except (FileNotFoundError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Data report: {written}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data-report", help="Write an HTML page of a run's data: anomalies, quarantine, "
        "statistics.",
        description="Reads a run from ML Metadata and writes one self-contained HTML page: the "
        "data validation verdict and anomalies, the class balance, split size and drift checks, "
        "the quarantined inputs with their reasons, and the statistics of every split.",
    )
    parser.add_argument("path", help="The run's output folder (siamese-tfx run --output-dir), "
                        "its pipeline root, or its metadata.sqlite.")
    parser.add_argument("--run-id", default=None,
                        help="The pipeline run to report (default: the latest).")
    parser.add_argument("--output", default=None,
                        help="HTML file to write (default: <output folder>/data-report.html).")
    parser.add_argument("--with-facets", action=argparse.BooleanOptionalAction, default=False,
                        help="Also embed TFDV's Facets Overview of the statistics (the browser "
                        "loads its code from the web).")
    parser.set_defaults(func=data_report_command)

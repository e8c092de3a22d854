"""The report bundle: what needs attention as of a date, judged from sealed bags only.

:func:`build_report` selects, for each configured connector, the bag sealed last at or before
the report's instant (:func:`evidence.findings.select_bundles`), judges them
(:func:`evidence.findings.assess`), and seals the result as a bag of its own, chained and
ledgered like a collection bag (:func:`evidence.bundle.seal_bag`; ``Connector-Id: report``).
Its bag-info names every bag it judged (``Judged-Bag-Digest``, repeated). Payload::

    data/index.html      the report, self-contained (no external resources, no script)
    data/findings.csv    every finding, with its status and evidence
    data/changes.csv     every record added, removed or changed since the baseline
    data/accounts.csv    every account of every judged bag, with its roster match
    data/privileged.csv  every holder of an administrator role
    data/sharing.csv     every grant reaching beyond the organisation, or a link
    data/columns.csv     what each column of the CSV files means (ja + en)
    data/report.json     the same, for machines
    data/run.json        the report's completeness record (format shoseki-report/1)
    data/README.txt      what this is and how to verify it (ja + en)

Changes are counted against a *baseline*: the bags the previous report judged (the latest
report whose as-of is not after this one's), or, for a period (``--from`` / ``--to``), the
bags as of the end of its first day. The CSV files are streamed; index.html shows at most
:data:`CHANGES_SHOWN` changes per connector and :data:`FINDINGS_SHOWN` findings per rule, and
says how many more the CSV files hold.

The modules, in the order a report is made::

    base      the report's format, the connector id of report bags, and its errors
    period    the instant judged (Period, resolve_period) and the baseline (Baseline)
    changes   the changes of each judged bag since its baseline bag (compare_bundles)
    records   the records an evidence reference points at (load_evidence)
    csvs      the CSV files (CsvFile), their data dictionary (columns.csv), findings.csv's rows
    words     the texts in Japanese and English (LABELS, Words, status_text)
    page      index.html (PageInput, render_index)
    build     report.json and run.json; build_report, judge, seal_report, publish_report,
              summary_lines

Every name is importable from ``evidence.report``. The caps are read in the module that uses
them (:data:`evidence.report.changes.CHANGES_SHOWN`, :data:`evidence.report.page.FINDINGS_SHOWN`),
so that is where to change them: setting them here changes nothing.
"""

from evidence.report.base import FORMAT, REPORT, ReportError, ReportInputError
from evidence.report.period import (
    Baseline, BaselineBag, Period, end_of_day, instant_for_date, period_baseline, previous_report_baseline,
    resolve_period,
)
from evidence.report.changes import CHANGE_COLUMNS, CHANGES_SHOWN, ConnectorChanges, change_row, compare_bundles
from evidence.report.records import RUN_ERRORS_SHOWN, RUN_FIELDS, load_evidence
from evidence.report.words import FRESHNESS_LABELS, LABELS, Words, status_text
from evidence.report.csvs import (
    ACCOUNT_SPEC, COLUMN_DOCS, CSV_SPECS, DICTIONARY_HEADER, FINDING_COLUMNS, PRIVILEGED_COLUMNS, SHARING_SPEC, CsvFile,
    csv_header, finding_row, write_columns_csv,
)
from evidence.report.page import FINDINGS_SHOWN, PageInput, render_index, summary_href
from evidence.report.build import (
    ReportResult, build_report, judge, publish_report, report_json, seal_report, summary_lines,
)

__all__ = [
    "REPORT", "FORMAT", "Period", "Baseline", "ConnectorChanges", "ReportResult", "ReportError", "ReportInputError",
    "build_report", "resolve_period", "instant_for_date", "end_of_day", "previous_report_baseline", "load_evidence",
    "summary_lines", "judge", "seal_report", "publish_report", "CsvFile",
    # the rest of what the parts define, importable from here as from the single module this was
    "BaselineBag", "period_baseline", "CHANGE_COLUMNS", "CHANGES_SHOWN", "change_row", "compare_bundles",
    "RUN_ERRORS_SHOWN", "RUN_FIELDS", "FRESHNESS_LABELS", "LABELS", "Words", "status_text", "ACCOUNT_SPEC",
    "COLUMN_DOCS", "CSV_SPECS", "DICTIONARY_HEADER", "FINDING_COLUMNS", "PRIVILEGED_COLUMNS", "SHARING_SPEC",
    "csv_header", "finding_row", "write_columns_csv", "FINDINGS_SHOWN", "PageInput", "render_index", "summary_href",
    "report_json",
]

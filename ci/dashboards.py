#!/usr/bin/env python3
"""The Grafana dashboards' check (observability/grafana/dashboards/*.json), stdlib only.

  python3 ci/dashboards.py lint
      Every dashboard parses; every panel (panels inside rows too) has a title, a
      datasource (by uid) and a unit; every target has an expression and a datasource;
      every variable an expression, a title or a variable query uses is defined.

  python3 ci/dashboards.py check --prometheus http://127.0.0.1:9090 \\
      --var service=music [--var service=user ...] [--var replica=music-1] \\
      [--dashboard observability/grafana/dashboards/service.json ...]
      Every target of every panel, its variables substituted, sent to Prometheus's
      /api/v1/query. An error, an empty result or a result of NaN only fails, printing
      the dashboard, the panel's title and the query; a good one prints the panel's
      title and its first value. A variable given several times loops: the dashboards
      that use it are checked once per value. A variable not given takes its "All"
      value when it has one (the replica of the service dashboard). Annotation queries
      are sent too and their result printed, but an empty one does not fail (nothing
      happened). Exit 1 on any failure.

  python3 ci/dashboards.py selftest
      lint, then the substitution and the checker against a stand-in Prometheus on
      loopback (no Prometheus needed).
"""

import argparse
import itertools
import json
import math
import re
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "observability" / "grafana" / "dashboards"
DATASOURCES = ROOT / "observability" / "grafana" / "provisioning" / "datasources"

# Grafana's global variables a dashboard may use without defining them.
BUILTINS = {
    "__interval", "__interval_ms", "__rate_interval", "__rate_interval_ms", "__range",
    "__range_s", "__range_ms", "__dashboard", "__org", "__user", "__from", "__to",
    "__timeFilter", "__all",
}
# $name, ${name}, ${name:format}, [[name]] (Grafana's variable syntaxes).
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def panels_of(dashboard):
    """Every panel, those inside rows (collapsed or not) included, rows excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def rows_of(dashboard):
    return [p for p in dashboard.get("panels", []) if p.get("type") == "row"]


def variables_in(text):
    return {a or b or c for a, b, c in VARIABLE.findall(text or "")}


def expression_of(variable):
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


def datasource_uids():
    """The uids the provisioned datasources have (`uid:` lines of their YAML)."""
    uids = set()
    for path in sorted(DATASOURCES.glob("*.y*ml")):
        uids.update(re.findall(r"^\s*uid:\s*['\"]?([\w-]+)", path.read_text(), re.M))
    return uids


def lint_dashboard(path, dashboard, uids):
    """The problems of one parsed dashboard, as sentences."""
    problems = []
    name = path.name

    def datasource_ok(where, datasource):
        if not isinstance(datasource, dict) or not datasource.get("uid"):
            problems.append(f"{name}: {where}: no datasource uid")
        elif uids and datasource["uid"] not in uids and not datasource["uid"].startswith("-- "):
            problems.append(f"{name}: {where}: datasource uid {datasource['uid']!r} is not "
                            f"provisioned ({', '.join(sorted(uids))})")

    for key in ("uid", "title", "schemaVersion"):
        if not dashboard.get(key):
            problems.append(f"{name}: no {key}")
    defined = set()
    for variable in dashboard.get("templating", {}).get("list", []):
        if not variable.get("name"):
            problems.append(f"{name}: a variable has no name")
            continue
        defined.add(variable["name"])
        if variable.get("type") == "query":
            datasource_ok(f"variable {variable['name']}", variable.get("datasource"))
            if not expression_of(variable).strip():
                problems.append(f"{name}: variable {variable['name']}: no query")
    used = []
    for variable in dashboard.get("templating", {}).get("list", []):
        used.append((f"variable {variable.get('name')}", expression_of(variable)))
    ids = []
    for row in rows_of(dashboard):
        if not row.get("title"):
            problems.append(f"{name}: a row (id {row.get('id')}) has no title")
        ids.append(row.get("id"))
    for panel in panels_of(dashboard):
        title = panel.get("title") or ""
        where = f"panel {title!r}" if title else f"panel id {panel.get('id')}"
        ids.append(panel.get("id"))
        if not title.strip():
            problems.append(f"{name}: {where}: no title")
        datasource_ok(where, panel.get("datasource"))
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if not unit:
            problems.append(f"{name}: {where}: no unit (fieldConfig.defaults.unit)")
        if not panel.get("gridPos"):
            problems.append(f"{name}: {where}: no gridPos")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{name}: {where}: no targets")
        for target in targets:
            ref = target.get("refId", "?")
            if not (target.get("expr") or "").strip():
                problems.append(f"{name}: {where} target {ref}: no expr")
            datasource_ok(f"{where} target {ref}", target.get("datasource"))
            used.append((f"{where} target {ref}", target.get("expr", "")))
        used.append((where, title))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("builtIn"):
            continue
        where = f"annotation {annotation.get('name')!r}"
        datasource_ok(where, annotation.get("datasource"))
        if not (annotation.get("expr") or "").strip():
            problems.append(f"{name}: {where}: no expr")
        used.append((where, annotation.get("expr", "")))
    for where, text in used:
        for variable in sorted(variables_in(text) - defined - BUILTINS):
            problems.append(f"{name}: {where}: variable ${variable} is not defined")
    duplicates = sorted({i for i in ids if ids.count(i) > 1 and i is not None})
    if duplicates:
        problems.append(f"{name}: panel ids used twice: {duplicates}")
    return problems


def load(path):
    """(dashboard, None) or (None, the reason it does not parse)."""
    try:
        return json.loads(Path(path).read_text()), None
    except (OSError, ValueError) as e:
        return None, f"{Path(path).name}: does not parse: {e}"


def lint(paths):
    uids = datasource_uids()
    problems, panels = [], 0
    if not paths:
        problems.append(f"no dashboard under {DASHBOARDS}")
    for path in paths:
        dashboard, error = load(path)
        if error:
            problems.append(error)
            continue
        problems.extend(lint_dashboard(Path(path), dashboard, uids))
        panels += sum(1 for _ in panels_of(dashboard))
    for problem in problems:
        print(f"ci/dashboards.py: lint: {problem}", file=sys.stderr)
    if not problems:
        print(f"ci/dashboards.py: lint: {len(paths)} dashboards, {panels} panels: each has a "
              f"title, a datasource and a unit; every target an expression; every variable defined")
    return not problems


def substitute(expr, values, builtins):
    """`expr` with each variable replaced by its value (values first, then builtins)."""
    def one(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name in values:
            return values[name]
        if name in builtins:
            return builtins[name]
        return match.group(0)
    return VARIABLE.sub(one, expr)


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 1m or 1h")
    return int(match.group(1)) * units[match.group(2)]


def builtin_values(interval, rate_interval, range_):
    return {
        "__interval": interval, "__interval_ms": str(int(duration_seconds(interval) * 1000)),
        "__rate_interval": rate_interval,
        "__rate_interval_ms": str(int(duration_seconds(rate_interval) * 1000)),
        "__range": range_, "__range_s": str(int(duration_seconds(range_))),
        "__range_ms": str(int(duration_seconds(range_) * 1000)),
    }


def bindings(dashboard, given):
    """Each assignment of the variables the dashboard defines: the product of the values
    given for each (one check per combination); an error for a variable with neither a
    given value nor an "All" value."""
    names, choices = [], []
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable.get("name")
        if name in given:
            values = given[name]
        elif variable.get("includeAll") and variable.get("allValue"):
            values = [variable["allValue"]]
        else:
            raise ValueError(f"variable ${name} has no value: pass --var {name}=VALUE")
        names.append(name)
        choices.append(values)
    return [dict(zip(names, combination)) for combination in itertools.product(*choices)]


def query(prometheus, expr, timeout=15):
    """Prometheus's answer to an instant query: (result type, result) or raises."""
    url = prometheus.rstrip("/") + "/api/v1/query"
    data = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as e:
        try:
            answer = json.load(e)
        except ValueError:
            raise RuntimeError(f"HTTP {e.code}") from None
    if answer.get("status") != "success":
        raise RuntimeError(f"{answer.get('errorType', 'error')}: {answer.get('error', answer)}")
    return answer["data"]["resultType"], answer["data"]["result"]


def first_value(result_type, result):
    """(the value, its labels as text, whether every value is NaN) of a non-empty result."""
    if result_type in ("scalar", "string"):
        return result[1], "", result[1] == "NaN"
    values = []
    for series in result:
        if result_type == "vector":
            values.append(series["value"][1])
        else:
            values.extend(v for _, v in series["values"])
    labels = result[0].get("metric", {})
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    value = result[0]["value"][1] if result_type == "vector" else result[0]["values"][-1][1]
    return value, shown, all(v.lower() == "nan" for v in values)


def pretty(value):
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isnan(number) or math.isinf(number):
        return value
    return f"{number:.6g}"


def check(prometheus, paths, given, builtins):
    """Every target of every panel of each dashboard, for each binding of its variables;
    returns the number of failures."""
    failures = checked = 0
    for path in paths:
        dashboard, error = load(path)
        if error:
            print(f"ci/dashboards.py: FAIL {error}", file=sys.stderr)
            failures += 1
            continue
        name = Path(path).name
        try:
            assignments = bindings(dashboard, given)
        except ValueError as e:
            print(f"ci/dashboards.py: FAIL {name}: {e}", file=sys.stderr)
            failures += 1
            continue
        for values in assignments:
            shown = " ".join(f"{k}={v}" for k, v in values.items())
            print(f"== {name}{' (' + shown + ')' if shown else ''}")
            for panel in panels_of(dashboard):
                for target in panel.get("targets", []):
                    if target.get("hide"):
                        continue
                    expr = substitute(target.get("expr", ""), values, builtins)
                    title = panel.get("title", "?")
                    label = f"{title} [{target.get('refId', '?')}]"
                    checked += 1
                    problem = None
                    if "$" in expr or "[[" in expr:
                        problem = "a variable is left unsubstituted"
                    else:
                        try:
                            result_type, result = query(prometheus, expr)
                        except (OSError, RuntimeError, ValueError, KeyError) as e:
                            problem = f"query failed: {e}"
                        else:
                            if not result:
                                problem = "empty result"
                            else:
                                value, labels, nan = first_value(result_type, result)
                                if nan:
                                    problem = "only NaN (no observations in the window)"
                    if problem:
                        failures += 1
                        print(f"FAIL {name} / {label}: {problem}\n     {expr}", file=sys.stderr)
                    else:
                        where = f" {{{labels}}}" if labels else ""
                        print(f"ok   {label}: {pretty(value)}{where}")
            for annotation in dashboard.get("annotations", {}).get("list", []):
                if annotation.get("builtIn") or not annotation.get("expr"):
                    continue
                expr = substitute(annotation["expr"], values, builtins)
                try:
                    _, result = query(prometheus, expr)
                except (OSError, RuntimeError, ValueError, KeyError) as e:
                    failures += 1
                    print(f"FAIL {name} / annotation {annotation.get('name')}: query failed: {e}"
                          f"\n     {expr}", file=sys.stderr)
                    continue
                marks = sorted({" ".join(v for _, v in sorted(s.get("metric", {}).items()))
                                for s in result})
                print(f"ok   annotation {annotation.get('name')}: "
                      f"{', '.join(marks) if marks else 'no event in the last minute'}")
    print(f"ci/dashboards.py: check: {checked} panel queries, {failures} failed")
    return failures


def selftest():
    paths = sorted(DASHBOARDS.glob("*.json"))
    ok = lint(paths)
    builtins = builtin_values("30s", "1m", "15m")
    cases = [
        ('rate(x{service="$service"}[$__rate_interval])', 'rate(x{service="music"}[1m])'),
        ('x{service="${service}", replica=~"$replica"}', 'x{service="music", replica=~".*"}'),
        ('increase(x[$__range]) / $__range_s', "increase(x[15m]) / 900"),
        ("[[service]] ${service:regex} $__interval", "music music 30s"),
        ("$servicex", "$servicex"),
    ]
    for given, expected in cases:
        got = substitute(given, {"service": "music", "replica": ".*"}, builtins)
        if got != expected:
            ok = False
            print(f"selftest: substitute({given!r}) = {got!r}, not {expected!r}", file=sys.stderr)
    service = json.loads((DASHBOARDS / "service.json").read_text())
    got = bindings(service, {"service": ["music", "user"]})
    if got != [{"service": "music", "replica": ".*"}, {"service": "user", "replica": ".*"}]:
        ok = False
        print(f"selftest: bindings of service.json: {got}", file=sys.stderr)
    try:
        bindings(service, {})
        ok = False
        print("selftest: service.json without --var service was accepted", file=sys.stderr)
    except ValueError:
        pass
    bad = lint_dashboard(Path("bad.json"), {
        "uid": "x", "title": "x", "schemaVersion": 39,
        "panels": [{"type": "row", "title": "r", "id": 1, "panels": [
            {"id": 2, "type": "timeseries", "title": "", "gridPos": {},
             "targets": [{"refId": "A", "expr": 'x{a="$nope"}'}]}]}],
    }, {"prometheus"})
    for expected in ("no title", "no datasource uid", "no unit", "$nope is not defined"):
        if not any(expected in problem for problem in bad):
            ok = False
            print(f"selftest: lint missed {expected!r} in {bad}", file=sys.stderr)

    # The checker against a stand-in Prometheus: data for every query but those naming
    # `absent_metric` (empty) and `nan_metric` (NaN); a 400 for `bad(`.
    sent = []

    class Prometheus(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            expr = urllib.parse.parse_qs(self.rfile.read(length).decode())["query"][0]
            sent.append(expr)
            if "bad(" in expr:
                status, body = 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
            else:
                value = "NaN" if "nan_metric" in expr else "1.5"
                result = [] if "absent_metric" in expr else [
                    {"metric": {"service": "music"}, "value": [0, value]}]
                status, body = 200, {"status": "success",
                                     "data": {"resultType": "vector", "result": result}}
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        failures = check(url, paths, {"service": ["music", "user"]}, builtins)
        if failures:
            ok = False
            print(f"selftest: {failures} failures against a Prometheus that has data", file=sys.stderr)
        if not sent or any("$" in e for e in sent):
            ok = False
            print(f"selftest: queries sent with variables left: {[e for e in sent if '$' in e]}",
                  file=sys.stderr)
        if not any('service="user"' in e for e in sent):
            ok = False
            print("selftest: the second --var service value was not checked", file=sys.stderr)
        broken = Path(tempfile.mkdtemp()) / "broken.json"
        print("selftest: three failures expected (empty, NaN only, an error), then none",
              file=sys.stderr)
        for expr, expected in [("absent_metric", 1), ("nan_metric", 1), ("bad(", 1), ("up", 0)]:
            broken.write_text(json.dumps({"panels": [{"title": "p", "targets": [{"refId": "A", "expr": expr}]}]}))
            failures = check(url, [broken], {}, builtins)
            if failures != expected:
                ok = False
                print(f"selftest: {expr!r}: {failures} failures, not {expected}", file=sys.stderr)
        broken.unlink()
        broken.parent.rmdir()
    finally:
        server.shutdown()
    print(f"ci/dashboards.py: selftest {'passed' if ok else 'FAILED'}")
    return ok


def main():
    parser = argparse.ArgumentParser(
        prog="ci/dashboards.py",
        description="Lint the Grafana dashboards, or check every panel's query against a real Prometheus.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    lint_parser = commands.add_parser("lint", help="every dashboard parses; every panel has a title, a datasource and a unit")
    lint_parser.add_argument("--dashboard", action="append", default=[], metavar="FILE",
                             help="a dashboard JSON (default: every one under observability/grafana/dashboards)")
    check_parser = commands.add_parser("check", help="every panel's queries return data from Prometheus")
    check_parser.add_argument("--prometheus", required=True, metavar="URL",
                              help="Prometheus's base URL, e.g. http://127.0.0.1:9090")
    check_parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                              help="a dashboard variable's value; repeat a name to check each value")
    check_parser.add_argument("--dashboard", action="append", default=[], metavar="FILE",
                              help="a dashboard JSON (default: every one under observability/grafana/dashboards)")
    check_parser.add_argument("--rate-interval", default="1m", type=str,
                              help="the value of $__rate_interval (default 1m)")
    check_parser.add_argument("--interval", default="30s", help="the value of $__interval (default 30s)")
    check_parser.add_argument("--range", default="15m",
                              help="the value of $__range, the dashboard's time range (default 15m)")
    commands.add_parser("selftest", help="lint, and the checker against a stand-in Prometheus")
    args = parser.parse_args()

    if args.command == "selftest":
        return 0 if selftest() else 1
    paths = [Path(p) for p in args.dashboard] or sorted(DASHBOARDS.glob("*.json"))
    if args.command == "lint":
        return 0 if lint(paths) else 1
    given = {}
    for assignment in args.var:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            parser.error(f"--var {assignment!r}: expected NAME=VALUE")
        given.setdefault(name, []).append(value)
    for duration in (args.rate_interval, args.interval, args.range):
        try:
            duration_seconds(duration)
        except argparse.ArgumentTypeError as e:
            parser.error(str(e))
    builtins = builtin_values(args.interval, args.rate_interval, args.range)
    return 1 if check(args.prometheus, paths, given, builtins) else 0


if __name__ == "__main__":
    sys.exit(main())

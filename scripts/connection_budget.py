"""The database connection budget of the SAM template (README, "Database connection budget").

The functions may together open at most as many connections as the database takes, less
those kept for admin and tools:

    IngestReservedConcurrency x ingest pool + QueryReservedConcurrency x query pool
      + (WriterMaximumConcurrency + 2) x writer pool
    <= DatabaseMaxConnections - DatabaseAdminConnections

(the writer runs two instances more than its event source mapping's: the maintenance
schedule's invocation and the deploy's migration invoke it outside the mapping)

where a function's pool is its own pool size parameter (IngestDbPoolSize, QueryDbPoolSize,
WriterDbPoolSize) or DbPoolSize when that is 0. It is checked for the template's defaults,
and for each environment of the samconfig files given that sets parameter_overrides, on top
of the defaults: its `deploy` section's, else its `global` section's (sam takes a command's
value over the global one, the whole list).

Usage, with the SAM tool chain's Python (it parses the template and the overrides as sam
does; scripts/lint-template runs both):

    python connection_budget.py TEMPLATE [SAMCONFIG...]   a line per budget; exit 1 on a breach
    python connection_budget.py --self-test TEMPLATE      the check on copies over budget
"""

import re
import sys
import tempfile
import tomllib
from pathlib import Path

from samcli.cli.types import CfnParameterOverridesType
from samcli.yamlhelper import yaml_parse

# (function, its most concurrent instances, instances beyond that, its own pool size) as
# template parameters.
FUNCTIONS = [
    ("ingest", "IngestReservedConcurrency", 0, "IngestDbPoolSize"),
    ("query", "QueryReservedConcurrency", 0, "QueryDbPoolSize"),
    # The maintenance schedule and the deploy's migration invoke the writer too.
    ("writer", "WriterMaximumConcurrency", 2, "WriterDbPoolSize"),
]
BUDGET_PARAMETERS = ["DatabaseMaxConnections", "DatabaseAdminConnections", "DbPoolSize"] + [
    name for _, concurrency, _, pool in FUNCTIONS for name in (concurrency, pool)
]


def defaults(template):
    """The template's parameters with their defaults, as text (as overrides are)."""
    parameters = yaml_parse(Path(template).read_text(encoding="utf-8"))["Parameters"]
    missing = [name for name in BUDGET_PARAMETERS if "Default" not in parameters.get(name, {})]
    if missing:
        raise SystemExit(f"{template}: no parameter with a default for {', '.join(missing)}")
    return {name: str(spec["Default"]) for name, spec in parameters.items() if "Default" in spec}


def environments(samconfig):
    """(environment, its parameter overrides) for each environment that sets some."""
    config = tomllib.loads(Path(samconfig).read_text(encoding="utf-8"))
    for env, commands in config.items():
        if not isinstance(commands, dict):
            continue
        for command in ("deploy", "global"):
            section = commands.get(command, {}).get("parameters", {})
            overrides = section.get("parameter_overrides")
            if overrides is not None:
                yield env, CfnParameterOverridesType().convert(overrides, None, None)
                break


def budget(values):
    """(connections the functions may open, the limit, how each part was counted)."""
    number = lambda name: int(float(values[name]))  # noqa: E731
    parts, used = [], 0
    for function, concurrency, extra, own_pool in FUNCTIONS:
        pool_name = own_pool if number(own_pool) > 0 else "DbPoolSize"
        instances, pool = number(concurrency) + extra, number(pool_name)
        used += instances * pool
        counted = f"{concurrency} + {extra}" if extra else concurrency
        parts.append(f"{function} {instances} ({counted}) x {pool} ({pool_name}) = {instances * pool}")
    most, admin = number("DatabaseMaxConnections"), number("DatabaseAdminConnections")
    limit = most - admin
    return used, limit, (
        f"{'; '.join(parts)}; limit {limit} = DatabaseMaxConnections {most}"
        f" - DatabaseAdminConnections {admin}"
    )


def check(template, samconfigs):
    """(a line per budget within its limit, a line per budget over it)."""
    base = defaults(template)
    cases = [(f"{template} (defaults)", base)]
    for samconfig in samconfigs:
        for env, overrides in environments(samconfig):
            cases.append((f"{samconfig} [{env}]", {**base, **overrides}))
    fine, over = [], []
    for where, values in cases:
        try:
            used, limit, how = budget(values)
        except ValueError as e:
            over.append(f"{where}: the connection budget cannot be computed: {e}")
            continue
        if used > limit:
            over.append(
                f"{where}: the functions may open {used} database connections, over the"
                f" {limit} allowed ({how}); lower a concurrency or a pool size, or raise"
                " DatabaseMaxConnections (README, \"Database connection budget\")"
            )
        else:
            fine.append(f"{where}: {used} of {limit} database connections ({how})")
    return fine, over


def with_default(text, name, value):
    """The template's text with parameter `name`'s default replaced."""
    pattern = rf"(\n  {name}:\n(?:    .*\n)*?    Default: )[^\n]*"
    changed, n = re.subn(pattern, rf"\g<1>{value}", text)
    assert n == 1, f"no default of {name} to replace"
    return changed


def self_test(template):
    """The check passes the template as it is and fails copies whose budget is over."""
    text = Path(template).read_text(encoding="utf-8")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        same = tmp / "template.yaml"
        same.write_text(text, encoding="utf-8")

        # The defaults over budget: max_connections 40, the default pools use 74.
        over = tmp / "over.yaml"
        over.write_text(with_default(text, "DatabaseMaxConnections", 40), encoding="utf-8")
        fine, problems = check(over, [])
        if len(problems) != 1 or not all(
            s in problems[0] for s in ("over.yaml (defaults)", " 74 ", "30 allowed")
        ):
            failures.append(f"defaults over budget: expected one breach of 74 over 30, got {problems}")

        # One environment over budget, one within it.
        samconfig = tmp / "samconfig.toml"
        samconfig.write_text(
            "version = 0.1\n"
            "[busy.deploy.parameters]\n"
            'parameter_overrides = ["IngestReservedConcurrency=100", "DbPoolSize=1"]\n'
            "[busy.build.parameters]\n"
            'parameter_overrides = ["Architecture=x86_64"]\n'
            "[lean.global.parameters]\n"
            'parameter_overrides = "IngestReservedConcurrency=200 IngestDbPoolSize=1 DatabaseMaxConnections=400"\n',
            encoding="utf-8",
        )
        fine, problems = check(same, [samconfig])
        if len(problems) != 1 or not all(
            s in problems[0] for s in ("[busy]", " 117 ", "90 allowed", "ingest 100")
        ):
            failures.append(f"an environment over budget: expected one breach of 117 over 90, got {problems}")
        if not any("[lean]" in line and "234 of 390" in line for line in fine):
            failures.append(f"an environment within budget: expected 234 of 390, got {fine}")
    return failures


def main(argv):
    if len(argv) == 2 and argv[0] == "--self-test":
        failures = self_test(argv[1])
        for failure in failures:
            print(f"connection budget self-test: {failure}", file=sys.stderr)
        return 1 if failures else 0
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    fine, over = check(argv[0], argv[1:])
    for line in fine:
        print(line)
    for line in over:
        print(line, file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

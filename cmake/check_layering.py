#!/usr/bin/env python3
"""Checks every #include of a Loom header against the allowed module graph.

The CTest `loom_layering` runs it on the source tree (tests/CMakeLists.txt); the graph is
cmake/layering.txt (its header says the format). Fails, naming file:line, the including module
and the forbidden one, when
  - a source includes a header of a module its module may not include;
  - product code (anything but *_test.cc, *_benchmark.cc, *_fuzzer.cc, testing/ folders, tests/
    and bench/) includes test-only headers: loom/<module>/testing/..., gtest, gmock, benchmark;
  - a source includes another module's internal header (*_internal.h, or one in an internal/
    folder: abseil's convention; only the module's own sources may include it);
  - a source lives in, or includes, a module the table does not know;
  - an `allow` exception no longer matches any include (remove it with the include).

Usage: check_layering.py [--root DIR] [--table FILE]
"""

import argparse
import os
import re
import sys

# Folders scanned, relative to the root, and the module their files belong to (None: the module
# is the folder below loom/).
SCANNED = [
    ("loom", None),
    ("include", "api"),
    ("proto", "proto"),
    ("python/src", "python"),
    ("bench", "bench"),
    ("tests", "tests"),
    ("examples", "examples"),
]
# Fixtures (fuzz corpora, models) are data, not sources.
SKIPPED_DIRS = {"tests/data"}
SOURCE_SUFFIXES = (".h", ".hpp", ".cc", ".cpp", ".c")
# Top-level folders whose every source is test or benchmark code.
TEST_ONLY_MODULES = {"tests", "bench"}
# Public headers of api installed from include/loom/.
API_HEADERS = {"loom/loom.h", "loom/loom_c.h"}
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')
TEST_FRAMEWORK_RE = re.compile(r"^(gtest|gmock|benchmark)/")
INTERNAL_HEADER_RE = re.compile(r"(_internal\.h|/internal/[^\n]*)$")


class Table:
    def __init__(self):
        self.allowed = {}  # module -> set of modules it may include
        self.allowances = {}  # (file, header) -> line number in the table


def ParseTable(path):
    """Returns (Table, errors)."""
    table = Table()
    errors = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        if line.startswith("allow "):
            words = line.split()
            if len(words) != 3:
                errors.append(f"{where}: expected 'allow <file> <header>', got '{line}'")
                continue
            table.allowances[(words[1], words[2])] = number
            continue
        module, sep, rest = line.partition(":")
        module = module.strip()
        if not sep or not re.fullmatch(r"[a-z_0-9]+", module):
            errors.append(f"{where}: expected '<module>: <modules>', got '{line}'")
            continue
        if module in table.allowed:
            errors.append(f"{where}: module {module} has a second line")
            continue
        table.allowed[module] = set(rest.split())
    for module, deps in table.allowed.items():
        for dep in sorted(deps - set(table.allowed)):
            errors.append(f"{path}: module {module} may include {dep}, which has no line")
        if module in deps:
            errors.append(f"{path}: module {module} lists itself")
    return table, errors


def ModuleOfFile(rel):
    """The module a source file belongs to ('loom/tune/x.cc' -> 'tune'), or None."""
    for folder, module in SCANNED:
        if rel == folder or rel.startswith(folder + "/"):
            if module is not None:
                return module
            parts = rel.split("/")
            return parts[1] if len(parts) > 2 else None
    return None


def IsTestOnlyFile(rel, module):
    base = os.path.basename(rel)
    stem = os.path.splitext(base)[0]
    return (
        module in TEST_ONLY_MODULES
        or "/testing/" in rel
        or stem.endswith(("_test", "_benchmark", "_fuzzer"))
    )


def ModuleOfHeader(header):
    """The module an included Loom header belongs to, or None when it is not a Loom header."""
    if header.startswith("loom/v1/") or header.startswith("proto/"):
        return "proto"
    if header in API_HEADERS:
        return "api"
    if header.startswith("loom/"):
        parts = header.split("/")
        # "loom/x.h" (no module folder) names no module: reported as the unknown module "x.h".
        return parts[1]
    return None


def SourceFiles(root):
    for folder, _ in SCANNED:
        top = os.path.join(root, folder)
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            dirnames[:] = sorted(
                d for d in dirnames if f"{rel_dir}/{d}" not in SKIPPED_DIRS and d != "build"
            )
            for name in sorted(filenames):
                if name.endswith(SOURCE_SUFFIXES):
                    yield f"{rel_dir}/{name}"


def Includes(path):
    """(line number, header) of each #include, outside raw string literals and block comments."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    # Generated-code templates (R"(...)") may hold #include lines of the code they generate.
    text = re.sub(
        r'R"([^()\\ ]{0,16})\((.*?)\)\1"', lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S
    )
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for number, line in enumerate(text.split("\n"), 1):
        m = INCLUDE_RE.match(line)
        if m:
            yield number, m.group(2)


def Check(root, table_path):
    """Returns the list of violations (empty: the tree keeps the layering)."""
    table, errors = ParseTable(table_path)
    if errors:
        return errors
    table_name = os.path.relpath(table_path, root) if table_path.startswith(root) else table_path
    used_allowances = set()
    reported_modules = set()
    for rel in SourceFiles(root):
        module = ModuleOfFile(rel)
        if module is None:
            continue
        if module not in table.allowed:
            if module not in reported_modules:
                reported_modules.add(module)
                errors.append(f"{rel}: module {module} has no line in {table_name}")
            continue
        test_only = IsTestOnlyFile(rel, module)
        for number, header in Includes(os.path.join(root, rel)):
            where = f"{rel}:{number}"
            if TEST_FRAMEWORK_RE.match(header) and not test_only:
                errors.append(
                    f"{where}: product code of {module} includes the test framework <{header}>; "
                    "move it to a *_test.cc or a testing/ library"
                )
                continue
            target = ModuleOfHeader(header)
            if target is None:
                continue
            if "/testing/" in header and not test_only:
                errors.append(
                    f'{where}: product code of {module} includes the test-only header "{header}"'
                )
                continue
            if target == module:
                continue
            if INTERNAL_HEADER_RE.search(header):
                errors.append(
                    f'{where}: {module} includes "{header}", an internal header of {target}; '
                    f"only {target}'s own sources may include it"
                )
                continue
            if target not in table.allowed:
                errors.append(
                    f'{where}: {module} includes "{header}" of unknown module {target} '
                    f"(not in {table_name})"
                )
                continue
            if target in table.allowed[module]:
                continue
            if (rel, header) in table.allowances:
                used_allowances.add((rel, header))
                continue
            may = " ".join(sorted(table.allowed[module])) or "nothing"
            errors.append(
                f'{where}: {module} may not include {target} ("{header}"); '
                f"{module} may include: {may} ({table_name})"
            )
    for (rel, header), number in sorted(table.allowances.items()):
        if (rel, header) not in used_allowances:
            errors.append(
                f"{table_name}:{number}: the exception 'allow {rel} {header}' matches no include "
                "that needs it any more; remove it"
            )
    return errors


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.dirname(here))
    parser.add_argument("--table", default=None)
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    table = os.path.abspath(args.table or os.path.join(root, "cmake", "layering.txt"))
    if not os.path.isfile(table):
        print(f"check_layering: no table at {table}", file=sys.stderr)
        return 2
    errors = Check(root, table)
    for e in errors:
        print(e)
    if errors:
        print(f"check_layering: {len(errors)} violation(s) of {os.path.relpath(table, root)}")
        return 1
    print(f"check_layering: every include keeps {os.path.relpath(table, root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Checks the principles guide and its Korean counterpart (make check-docs, in CI).

1. Pairing: every section of docs/principles.md (an `<a id="..."></a>` anchor) has its
   counterpart in docs/ko/principles.md, in the same order, and the reverse; the same for the
   glossaries' table rows (one row per term in each language).
2. Commands: every `make <target>` the guides name is a target of the Makefile, and every
   `scripts/...` file they name exists.
3. Links: every relative link in the guides, the glossaries and README.ko.md points at a file
   that exists.

`--self-test` runs the checks on broken examples first and fails unless each one bites.
"""

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = Path("docs/principles.md")
KOREAN = Path("docs/ko/principles.md")
GLOSSARIES = (Path("docs/glossary.md"), Path("docs/ko/glossary.md"))
LINKED = (ENGLISH, KOREAN, *GLOSSARIES, Path("README.ko.md"))

ANCHOR = re.compile(r'<a id="([a-z0-9-]+)"></a>')
MAKE = re.compile(r"\bmake\s+(?:-s\s+)?([a-z][a-z0-9-]*)")
SCRIPT = re.compile(r"\b(scripts/[A-Za-z0-9_./-]+\.(?:sh|py|mjs))")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Words that follow "make" in prose without naming a target.
NOT_TARGETS = {"sure", "it", "the", "a", "them", "this", "that", "each", "every", "one"}


def anchors(text):
    return ANCHOR.findall(text)


def glossary_rows(text):
    """Table rows of the glossary, without the header and separator rows."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [row for row in rows[2:] if not set(row) <= set("|-: ")]


def makefile_targets(makefile):
    return set(re.findall(r"^([a-zA-Z0-9_-]+):", makefile, flags=re.MULTILINE))


def check_pairing(english, korean):
    problems = []
    ours, theirs = anchors(english), anchors(korean)
    if not ours:
        problems.append(f"{ENGLISH}: no sections with <a id=...> anchors")
    for missing in [a for a in ours if a not in theirs]:
        problems.append(f"{KOREAN}: no section for #{missing} (it is in {ENGLISH})")
    for extra in [a for a in theirs if a not in ours]:
        problems.append(f"{ENGLISH}: no section for #{extra} (it is in {KOREAN})")
    if not problems and ours != theirs:
        problems.append(f"{KOREAN}: sections are not in the order of {ENGLISH}")
    return problems


def check_glossaries(english, korean):
    ours, theirs = len(glossary_rows(english)), len(glossary_rows(korean))
    if ours == 0:
        return [f"{GLOSSARIES[0]}: no terms"]
    if ours != theirs:
        return [f"{GLOSSARIES[1]}: {theirs} terms, {GLOSSARIES[0]} has {ours}"]
    return []


def check_commands(name, text, targets, root):
    problems = []
    for target in sorted(set(MAKE.findall(text)) - NOT_TARGETS):
        if target not in targets:
            problems.append(f"{name}: `make {target}` is not a Makefile target")
    for script in sorted(set(SCRIPT.findall(text))):
        if not (root / script).is_file():
            problems.append(f"{name}: {script} does not exist")
    return problems


def check_links(name, text, root):
    problems = []
    folder = (root / name).parent
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        if not (folder / target).resolve().exists():
            problems.append(f"{name}: link to {target}, which does not exist")
    return problems


def run(root):
    read = lambda path: (root / path).read_text(encoding="utf-8") if (root / path).exists() else None
    problems = []
    for path in (*LINKED, Path("Makefile")):
        if read(path) is None:
            problems.append(f"{path} is missing")
    if problems:
        return problems
    problems += check_pairing(read(ENGLISH), read(KOREAN))
    problems += check_glossaries(read(GLOSSARIES[0]), read(GLOSSARIES[1]))
    targets = makefile_targets(read(Path("Makefile")))
    for path in (ENGLISH, KOREAN):
        problems += check_commands(path, read(path), targets, root)
    for path in LINKED:
        problems += check_links(path, read(path), root)
    return problems


def self_test():
    """Each check must catch the breakage it exists for."""
    english = '<a id="one"></a>\n## One\n<a id="two"></a>\n## Two\nRun `make run`.\n'
    cases = {
        "a missing Korean section": check_pairing(english, '<a id="one"></a>\n'),
        "sections out of order": check_pairing(
            english, '<a id="two"></a>\n<a id="one"></a>\n'
        ),
        "a glossary term missing": check_glossaries(
            "| t | k |\n|---|---|\n| a | b |\n| c | d |\n", "| t | k |\n|---|---|\n| a | b |\n"
        ),
        "an unknown make target": check_commands("x", "`make no-such-target`", {"run"}, ROOT),
        "a missing script": check_commands("x", "scripts/no-such-script.sh", set(), ROOT),
    }
    with tempfile.TemporaryDirectory() as folder:
        cases["a broken link"] = check_links(
            Path("doc.md"), "[x](missing.md)", Path(folder)
        )
    clean = check_pairing(english, english) + check_commands("x", english, {"run"}, ROOT)
    failed = [name for name, problems in cases.items() if not problems]
    if clean:
        failed.append(f"a correct example was refused: {clean}")
    for name in failed:
        print(f"self-test: the check did not catch {name}", file=sys.stderr)
    return not failed


def main():
    if "--self-test" in sys.argv and not self_test():
        return 1
    problems = run(ROOT)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("docs: principles and glossary paired in English and Korean; commands and links exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())

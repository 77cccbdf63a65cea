"""The documentation holds together: the README stays a one-screen entry point that
links into ``docs/``, every relative link and anchor leads somewhere, and the README's
test command is the one CI runs."""

from __future__ import annotations

import re

from tests.project_docs import README, ROOT, anchors, doc_files, read_doc

README_MAX_BYTES = 12_000  # issue #18: what it is, the picture, two commands, figures
# [text](target) outside code spans; images too. Targets with a scheme are external.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def links(relative: str) -> list[str]:
    prose = CODE_SPAN.sub("", FENCE.sub("", read_doc(relative)))
    return LINK.findall(prose)


def test_the_readme_fits_on_a_screen():
    size = len(read_doc(README).encode("utf-8"))
    assert size < README_MAX_BYTES, (
        f"README.md is {size} bytes (limit {README_MAX_BYTES}): move detail into docs/")


def test_every_relative_link_and_anchor_exists():
    broken = []
    for doc in doc_files():
        folder = (ROOT / doc).parent
        for target in links(doc):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (folder / path).resolve() if path else ROOT / doc
            if not resolved.exists():
                broken.append(f"{doc}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and \
                    anchor not in anchors(resolved.relative_to(ROOT).as_posix()):
                broken.append(f"{doc}: {target} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    unlinked = [doc for doc in doc_files()[1:] if (ROOT / doc).resolve() not in linked]
    assert not unlinked, f"README.md's documentation list misses {unlinked}"


def test_the_readme_shows_the_test_command_ci_runs():
    # .ci/run "runs exactly the README's test command": its last command line must be
    # one of the README's shell commands.
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    command = ci[-1]
    shell = "\n".join(block for block in FENCE.findall(read_doc(README)) if block.startswith("```sh"))
    commands = {line.split("#", 1)[0].strip() for line in shell.splitlines()[1:]}
    assert command in commands, f".ci/run runs {command!r}, which README.md does not show"

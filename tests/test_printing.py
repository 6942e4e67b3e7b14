"""What hfmem prints of strings from outside: terminal-safe in tables and errors, inert in Markdown,
exact in JSON (issue 16, bullet 6)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, snapshot_path

from inspector.cli import run
from inspector.errors import ExitCode
from inspector.text import markdown_text, terminal_safe

# A terminal obeys these: clear the screen, set the window title, a hyperlink, go back to the start
# of the line, and show the rest right to left ("Trojan Source").
HOSTILE = "x\x1b[2J\x1b]0;owned\x07\x1b]8;;http://evil/\x1b\\\r\n\u202eevil\u2066"


def _hostile_snapshot(tmp_path: Path, **config: object) -> Path:
    doc = json.loads(snapshot_path("openai-community/gpt2").read_text())
    cfg = doc["json"]["config.json"]
    if isinstance(cfg, str):  # (the snapshot keeps the file as the Hub sent it)
        cfg = json.loads(cfg)
    cfg.update(config)
    doc["json"]["config.json"] = cfg
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    return path


def _no_controls(text: str) -> None:
    for line in text.split("\n"):
        assert terminal_safe(line) == line, f"unescaped control character in {line!r}"


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_a_hostile_model_type_is_shown_escaped(tmp_path: Path, capsys, fmt: str) -> None:
    path = _hostile_snapshot(tmp_path, model_type=HOSTILE)
    assert run([str(path), "--format", fmt, "--precision", "bf16"]) == 0
    out, err = capsys.readouterr()
    _no_controls(out)
    _no_controls(err)
    # Shown escaped, so the user sees what the config holds (in Markdown, with the backslash and the
    # bracket themselves escaped, to render as the same text).
    shown = "x\\x1b[2J" if fmt == "table" else "x\\\\x1b\\[2J"
    assert shown in out
    assert "u202eevil" in out


def test_a_hostile_model_type_stays_exact_in_json(tmp_path: Path, capsys) -> None:
    path = _hostile_snapshot(tmp_path, model_type=HOSTILE)
    assert run([str(path), "--json"]) == 0
    out = capsys.readouterr().out
    _no_controls(out)  # json.dumps escapes them
    assert json.loads(out)["architecture"]["model_type"] == HOSTILE


def test_markdown_from_outside_renders_as_text(tmp_path: Path, capsys) -> None:
    injected = "gpt2 | <img src=x onerror=alert(1)> ![p](http://evil/p.png) `code`"
    path = _hostile_snapshot(tmp_path, model_type=injected)
    assert run([str(path), "--format", "markdown", "--precision", "bf16"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "Architecture" in x)
    for construct in ("<img", "[p]", "`code"):  # HTML, an image, code: each with its backslash
        assert re.search(r"(?<!\\)" + re.escape(construct), line) is None, construct
    assert "gpt2 \\| \\<img src=x onerror=alert(1)> !\\[p\\](http://evil/p.png) \\`code\\`" in line
    # The architecture table keeps its two cells: the pipe is a literal, not a column.
    assert line.replace("\\|", "").count("|") == 3


def test_markdown_text_escapes_every_inline_construct() -> None:
    assert markdown_text("*a* _b_ ~c~ [d] <e> &amp; \\") == "\\*a\\* \\_b\\_ \\~c\\~ \\[d\\] \\<e> \\&amp; \\\\"
    assert markdown_text("Qwen/Qwen1.5-110B @ main 0123abcd") == "Qwen/Qwen1.5-110B @ main 0123abcd"


def test_terminal_safe_escapes_c0_c1_del_bidi_and_separators() -> None:
    for c in [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0)), "\u202e", "\u2066", "\u2028",
              "\u200f", "\u061c"]:
        assert c not in terminal_safe(f"a{c}b")
    assert terminal_safe("é 中文 🤗 tab") == "é 中文 🤗 tab"  # printable text is left alone


def test_a_servers_error_message_is_one_escaped_line(fake_hub, capsys) -> None:
    def hostile(role: str, path: str, status: int, headers: dict[str, str], body: object):
        if role == "hub" and "/api/models/" in path:
            # (an HTTP header cannot carry CR or LF; ESC, BEL and C1 controls it can)
            return 403, {"X-Error-Message": "gone\x1b[31m\x1b]0;t\x07 \x9b2J"}, b""
        return status, headers, body

    fake_hub.rewrite = hostile
    code = run(["openai-community/gpt2"])
    out, err = capsys.readouterr()
    assert code == int(ExitCode.AUTH) and out == ""
    assert err.count("\n") == 1 and err.startswith("hfmem: error: ")
    _no_controls(err)
    assert "gone\\x1b[31m" in err


def test_a_hostile_warning_is_one_escaped_line(tmp_path: Path, capsys) -> None:
    # `check` names the entry's id in its warnings; the GPU file's names reach the table.
    gpus = tmp_path / "gpus.toml"
    gpus.write_text('[[gpu]]\nname = "Evil\\u001b[2J\\r GPU"\nmemory_bytes = 25757220864\n'
                    'bandwidth_bytes_per_s = 1008000000000\n')
    code = run([str(snapshot_path("openai-community/gpt2").relative_to(ROOT)), "--gpus-file", str(gpus),
                "--gpu", "Evil\x1b[2J\r GPU"])
    out, err = capsys.readouterr()
    _no_controls(out)
    _no_controls(err)
    assert code == 0, err
    assert "Evil\\x1b[2J\\x0d GPU" in out

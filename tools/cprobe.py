"""Asking the C compiler what a header defines, through cffi.

Reading a header's text by hand would mean reimplementing the preprocessor
and the C layout rules, and getting both subtly wrong; the compiler already
knows them.  So every question is an integer constant expression (a macro's
value, a ``sizeof``, an ``offsetof``, a signedness test) placed on a line of
its own in a generated initializer, and cffi compiles it and hands back the
answers.

A macro can be absent without breaking the compile: its question sits in an
``#ifdef`` and an undefined macro is answered None.  A struct or a field
cannot be tested that way, so the first compile attempt is allowed to fail:
the lines the compiler rejects are the questions whose struct or field the
header lacks (or whose member is not an integer); they are answered
`Rejected` with the compiler's reason, and the rest is compiled again.  An
error that no question line accounts for means the header itself does not
compile, and says so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import re
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cffi

QUESTIONS_FILE = "uabi-questions.c"  # the name the compiler gives our lines in its messages
_serial = itertools.count()


class HeaderError(Exception):
    """The header cannot be compiled at all, or cannot be found."""


@dataclass(frozen=True)
class Question:
    key: str
    expr: str  # an integer constant expression
    macro: str | None = None  # ask only when this macro is defined


def macro_value(name: str) -> Question:
    return Question(name, name, macro=name)


def struct_size(struct: str) -> Question:
    return Question(f"sizeof(struct {struct})", f"sizeof(struct {struct})")


def field_offset(struct: str, field: str) -> Question:
    return Question(f"offsetof(struct {struct}, {field})", f"offsetof(struct {struct}, {field})")


def field_size(struct: str, field: str) -> Question:
    return Question(f"sizeof({struct}.{field})", f"sizeof({_member(struct, field)})")


def field_signed(struct: str, field: str) -> Question:
    """1 for a signed integer member, 0 for unsigned; a member that is not an
    integer (an array, a struct, a union) makes the question fail to compile."""
    return Question(f"signed({struct}.{field})", f"(__typeof__({_member(struct, field)}))-1 < 0")


def _member(struct: str, field: str) -> str:
    return f"((struct {struct} *)0)->{field}"


@dataclass(frozen=True)
class Rejected:
    """A question the compiler refused: the header lacks the struct or field
    it names, or the macro or member is not what the question assumes."""

    message: str


Answer = int | None | Rejected  # None: the macro is not defined


def ask(questions: Sequence[Question], includes: Sequence[str],
        include_dirs: Sequence[Path] = ()) -> dict[str, Answer]:
    """Each question's value as the compiler computes it after including
    `includes` in order (e.g. linux/ioctl.h, which the header expects its
    user to have included, then the header)."""
    answers: dict[str, Answer] = {}
    pending = list(questions)
    while True:
        values, errors = _compile(pending, includes, include_dirs)
        if values is not None:
            answers.update(zip((q.key for q in pending), values, strict=True))
            return {q.key: answers[q.key] for q in questions}
        rejected = _rejected(errors, len(pending))
        if not rejected:
            _, header_errors = _compile([], includes, include_dirs)
            raise HeaderError(_first_error(header_errors or errors))
        for i, message in rejected.items():
            answers[pending[i].key] = Rejected(message)
        pending = [q for i, q in enumerate(pending) if i not in rejected]


def resolve(header: str, include_dirs: Sequence[Path] = ()) -> Path:
    """The file that ``#include <header>`` opens with these include dirs,
    as the compiler's dependency output names it."""
    cmd = [*_compiler(), *(f"-I{Path(d).resolve()}" for d in include_dirs), "-M", "-x", "c", "-"]
    proc = subprocess.run(cmd, input=f"#include <{header}>\n", capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        raise HeaderError(_first_error(proc.stderr))
    deps = proc.stdout.replace("\\\n", " ").split(":", 1)[1].split()
    for dep in deps:
        if dep.endswith("/" + header):
            return Path(dep).resolve()
    raise HeaderError(f"the compiler did not open <{header}>")


def multiarch() -> str | None:
    """The Debian multiarch triplet, under which a linux-libc-dev tree keeps <asm/...>."""
    return sysconfig.get_config_var("MULTIARCH") or None


def _compiler() -> list[str]:
    return (sysconfig.get_config_var("CC") or "cc").split()


def _source(questions: Sequence[Question], includes: Sequence[str]) -> str:
    """The C file.  The #line directives make the compiler name question i
    by line i + 1 of QUESTIONS_FILE, whatever cffi and the #ifdefs put
    around it."""
    numbered = []
    for i, q in enumerate(questions):
        entry = f"{{1, ({q.expr}) < 0, (unsigned long long)({q.expr})}},"
        if q.macro:
            numbered += [f"#ifdef {q.macro}", f'#line {i + 1} "{QUESTIONS_FILE}"', entry,
                         "#else", "{0, 0, 0},", "#endif"]
        else:
            numbered += [f'#line {i + 1} "{QUESTIONS_FILE}"', entry]
    return "\n".join([
        "#include <stddef.h>",
        *(f"#include <{h}>" for h in includes),
        _STRUCT,
        f"struct uabi_answer uabi_answers[{len(questions) + 1}] = {{",
        *numbered,
        f'#line {len(questions) + 1} "{QUESTIONS_FILE}"',
        "{0, 0, 0}",
        "};",
        '#line 1 "uabi-glue.c"',
        "",
    ])


_STRUCT = "struct uabi_answer { int present; int negative; unsigned long long value; };"


def _compile(questions: Sequence[Question], includes: Sequence[str],
             include_dirs: Sequence[Path]) -> tuple[list[Answer] | None, str]:
    """The answers, or None and the compiler's messages."""
    ffi = cffi.FFI()
    ffi.cdef(f"{_STRUCT} extern struct uabi_answer uabi_answers[{len(questions) + 1}];")
    name = f"_uabi_probe_{os.getpid()}_{next(_serial)}"
    ffi.set_source(name, _source(questions, includes), include_dirs=[str(Path(d).resolve()) for d in include_dirs])
    with tempfile.TemporaryDirectory(prefix="uffd-uabi-probe-") as tmp:
        with _stderr_to(Path(tmp) / "stderr") as messages:
            try:
                so = ffi.compile(tmpdir=tmp, verbose=False)
            except (cffi.VerificationError, OSError, SystemExit):
                so = None
        if so is None:
            return None, messages.read_text(errors="replace")
        spec = importlib.util.spec_from_file_location(name, so)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out: list[Answer] = []
        for i in range(len(questions)):
            a = module.lib.uabi_answers[i]
            if not a.present:
                out.append(None)
            else:
                out.append(a.value - (1 << 64) if a.negative else a.value)
        return out, ""


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[Path]:
    """Send file descriptor 2 (where the compiler, a child process, writes)
    to a file: rejected questions are expected, not news for the user."""
    saved = os.dup(2)
    locale = os.environ.get("LC_ALL")
    os.environ["LC_ALL"] = "C"  # plain quotes in the messages we pass on
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 2)
        yield path
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if locale is None:
            del os.environ["LC_ALL"]
        else:
            os.environ["LC_ALL"] = locale


def _rejected(messages: str, count: int) -> dict[int, str]:
    """The questions whose lines the compiler complained about, by index,
    with its first complaint about each."""
    pattern = re.compile(rf"^{re.escape(QUESTIONS_FILE)}:(\d+):(?:\d+:)?\s*(?:error|note):\s*(.*)$",
                         re.MULTILINE)
    out: dict[int, str] = {}
    for m in pattern.finditer(messages):
        n = int(m.group(1))
        if 1 <= n <= count:
            out.setdefault(n - 1, m.group(2).strip())
    return out


def _first_error(messages: str) -> str:
    """The compiler's first error, without the generated file's name."""
    for line in messages.splitlines():
        m = re.search(r"(?:fatal )?error: (.*)", line)
        if m:
            where = re.match(r"(\S+?):(\d+):", line)
            generated = where is None or where.group(1).startswith("_uabi_probe_")
            return m.group(1).strip() if generated else f"{where.group(1)}:{where.group(2)}: {m.group(1).strip()}"
    return messages.strip().splitlines()[-1] if messages.strip() else "the compiler failed"

"""The cffi bindings are the model, checked by the C compiler: what the
compiled module says about every struct, field and number equals what the
model computed, a wrong model does not compile, and the installed
<linux/userfaultfd.h> (which may lack UFFDIO_MOVE) is never read."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spec
from conformance import bindings

SPEC = spec.load()
MODULE = bindings.load(SPEC)
ROOT = Path(__file__).resolve().parent.parent
CC = shutil.which("cc") or shutil.which("gcc")


def compile_source(source: str) -> subprocess.CompletedProcess[str]:
    """Compile (syntax and static assertions only) a C source on stdin."""
    assert CC is not None
    return subprocess.run([CC, "-fsyntax-only", "-x", "c", "-"], input=source,
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize("struct", SPEC.structs, ids=lambda s: s.name)
def test_struct_layout_is_the_models(struct: spec.model.Struct) -> None:
    ffi = MODULE.ffi
    assert ffi.sizeof(f"struct {struct.name}") == struct.size
    for field in struct.fields:
        assert ffi.offsetof(f"struct {struct.name}", field.name) == field.offset, field.name
        member = dict(ffi.typeof(f"struct {struct.name}").fields)[field.name]
        assert ffi.sizeof(member.type) == field.size, field.name


@pytest.mark.parametrize("ioctl", SPEC.ioctls, ids=lambda i: i.name)
def test_request_codes_are_the_models(ioctl: spec.model.Ioctl) -> None:
    assert getattr(MODULE.lib, ioctl.name) == ioctl.request


def test_every_named_value_is_the_models() -> None:
    lib = MODULE.lib
    assert {name: getattr(lib, name) for name in SPEC.values()} == SPEC.values()


def test_signedness_of_the_out_fields() -> None:
    """`move` is __s64: a negated errno reads back negative."""
    arg = MODULE.ffi.new("struct uffdio_move *")
    arg.move = -22
    assert arg.move == -22


@pytest.mark.skipif(CC is None, reason="no C compiler")
def test_the_system_header_is_never_read() -> None:
    deps = subprocess.run([CC, "-M", "-x", "c", "-"], input=bindings.c_source(SPEC),
                          capture_output=True, text=True, check=True).stdout
    assert "userfaultfd.h" not in deps
    assert "linux/ioctl.h" in deps  # the list is real: it holds what the source does include
    assert bindings.SYSTEM_HEADER not in bindings.c_source(SPEC)
    assert bindings.SYSTEM_HEADER not in bindings.cdef(SPEC)


@pytest.mark.skipif(CC is None, reason="no C compiler")
def test_the_compiler_checks_the_models_layout() -> None:
    """A model that put `move` 4 bytes further fails to compile, naming it."""
    struct = SPEC.struct
    moved = tuple(dataclasses.replace(f, offset=f.offset + 4) if f.name == "move" else f
                  for f in struct.fields)
    wrong = dataclasses.replace(SPEC, struct=dataclasses.replace(struct, fields=moved))
    assert compile_source(bindings.c_source(SPEC)).returncode == 0
    done = compile_source(bindings.c_source(wrong))
    assert done.returncode != 0
    assert f"struct {struct.name}: offset of move" in done.stderr


@pytest.mark.skipif(CC is None, reason="no C compiler")
def test_the_compiler_checks_the_models_request_codes() -> None:
    """A request code computed with the wrong direction fails to compile."""
    ioctl = dataclasses.replace(SPEC.ioctl, request=SPEC.ioc.encode(
        ("read",), SPEC.ioctl.type_value, SPEC.ioctl.nr, SPEC.struct.size))
    done = compile_source(bindings.c_source(dataclasses.replace(SPEC, ioctl=ioctl)))
    assert done.returncode != 0
    assert f"{ioctl.name}: request code" in done.stderr


def test_the_build_is_cached_and_reused(tmp_path: Path) -> None:
    """A second process finds the compiled module and does not compile: a
    read-only tree (a guest VM's) can import what the host built."""
    library = bindings._find_library(bindings.build_dir(SPEC), bindings.module_name(SPEC))
    assert library is not None and library.parent == bindings.build_dir(SPEC)
    code = ("import spec, conformance.bindings as b\n"
            "def refuse(*a, **k): raise SystemExit('compiled again')\n"
            "b._compile = refuse\n"
            "m = b.load(spec.load())\n"
            "print(m.lib.UFFDIO_MOVE)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == SPEC.ioctl.request


def test_a_changed_model_gets_its_own_build() -> None:
    other = dataclasses.replace(SPEC, constants=SPEC.constants[:-1])
    assert bindings.build_dir(other) != bindings.build_dir(SPEC)
    assert bindings.module_name(other) != bindings.module_name(SPEC)

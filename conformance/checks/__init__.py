"""The checks; importing this package registers every one of them."""

from . import (  # noqa: F401 - imported for their @check registrations
    api,
    eagain,
    ebusy,
    eexist,
    efault,
    einval_args,
    einval_vma,
    enoent,
    huge,
    success,
    swap,
    unreachable,
    wake,
)

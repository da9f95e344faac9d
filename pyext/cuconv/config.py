"""cuconv's runtime switches, in one place.

Environment variables give the defaults, read once when cuconv is imported; `set` changes a switch
for the process and `flags` for a block, as torch.backends.cudnn.flags does:

    cuconv.config.get()                          # every switch's value
    cuconv.config.set(cpu_isa="avx2")            # from now on
    with cuconv.config.flags(simulate=True, sim_block_order="reverse"):
        ...                                      # only inside the block

| switch          | environment            | values                                        |
|-----------------|------------------------|-----------------------------------------------|
| cpu_isa         | CUCONV_CPU_ISA         | auto, amx, avx512_bf16, avx512, avx2, portable|
| cpu_conv_algo   | CUCONV_CPU_CONV_ALGO   | auto, gemm, winograd                          |
| simulate        | CUCONV_SIM             | bool                                          |
| sim_tf32        | CUCONV_SIM_TF32        | bool                                          |
| sim_block_order | CUCONV_SIM_BLOCK_ORDER | linear, reverse, random[:seed]                |
| sim_timeout_s   | CUCONV_SIM_TIMEOUT_S   | int (seconds)                                 |
| sim_device      | (none)                 | dict of device properties                     |
| sync_launches   | CUCONV_SYNC_LAUNCHES   | bool                                          |
| poison          | CUCONV_POISON          | bool                                          |

The switches are process-wide (C++ atomics read by every op), not per thread.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict

from . import _C

_FLAGS = ("simulate", "sim_tf32", "sync_launches", "poison")
_INTS = ("sim_timeout_s",)


def _from_text(name: str, text: str):
    if name in _FLAGS:
        return text == "1"
    if name in _INTS:
        return int(text)
    return text


def _to_text(name: str, value: Any) -> str:
    if name in _FLAGS:
        if not isinstance(value, (bool, int)):
            raise ValueError(f"cuconv.config: {name} takes a bool, got {value!r}")
        return "1" if value else "0"
    if name in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"cuconv.config: {name} takes whole seconds (an int), got {value!r}")
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"cuconv.config: {name} takes a string, got {value!r}")
    return value


def get() -> Dict[str, Any]:
    """Every switch's current value (sim_device as a dict of the simulated device's properties)."""
    values = {name: _from_text(name, text) for name, text in _C._config_values().items()}
    values["sim_device"] = dict(_C._sim_device())
    return values


def set(**switches) -> None:  # noqa: A001 (the module is used as cuconv.config.set)
    """Sets switches for the process. sim_device takes a dict of properties to change ({} restores
    the default simulated device). A bad name or value raises ValueError and changes nothing."""
    for name, value in switches.items():  # validate everything before changing anything
        if name == "sim_device":
            if not isinstance(value, dict):
                raise ValueError(f"cuconv.config: sim_device takes a dict, got {value!r}")
        elif name not in _C._config_values():
            known = ", ".join(sorted(list(_C._config_values()) + ["sim_device"]))
            raise ValueError(f"cuconv.config: unknown switch {name!r}; the switches are {known}")
        else:
            _to_text(name, value)
    for name, value in switches.items():
        if name == "sim_device":
            _C._set_sim_device({} if not value else {**_C._sim_device(), **value})
        else:
            _C._config_set(name, _to_text(name, value))


@contextlib.contextmanager
def flags(**switches):
    """Sets switches inside a `with` block and restores their previous values after it."""
    before = get()
    previous = {name: before[name] for name in switches if name in before}
    set(**switches)
    try:
        yield
    finally:
        if "sim_device" in previous:
            _C._set_sim_device({})
            _C._set_sim_device(previous.pop("sim_device"))
        set(**previous)

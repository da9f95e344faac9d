"""`python -m cuconv bench --models NAMES`: whole torchvision models converted with `cuconv.convert`
against the same models unconverted, and each distinct conv / max-pool layer of those models alone.

The models view times, per model and layout, a training step (forward, cross-entropy, backward,
SGD step) and an inference forward (eval mode, no_grad) of both sides, interleaved in one process
with bench.py's machinery, and checks once (untimed) that both sides compute the same outputs. The
layers view enumerates the model's nn.Conv2d / nn.MaxPool2d calls in one forward pass, groups calls
of the same geometry (op kind, input shape, kernel, stride, padding, dilation, groups; the run's
layout and dtype) and times each group's passes alone: forward, grad input and grad weight for a
convolution, forward and backward for a pool."""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..ops import _conv_args, _conv_out, _pair, _pool_out
from . import bench

# The models the issue names; `--models all` runs these, in this order.
MODEL_NAMES = ("resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
               "convnext_tiny", "regnet_y_400mf", "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet",
               "densenet121", "alexnet", "vgg11")
MODEL_PASSES = ("train_step", "inference")
CONV_PASSES = ("conv_fwd", "conv_grad_input", "conv_grad_weight")
POOL_PASSES = ("pool_fwd", "pool_bwd")
LAYOUTS = ("nchw", "channels_last")
VIEWS = ("models", "layers", "both")
# Largest max|cuconv - native| / max|native| of the inference outputs that counts as agreement:
# float32 accumulates in another order (and Winograd's transforms) through tens of layers.
CHECK_TOL = {"float32": 1e-3, "float64": 1e-9}
CHECK_TOL_DEFAULT = 3e-2  # half-precision types
PASS_NAMES = {"train_step": "train", "inference": "infer", "conv_fwd": "fwd", "conv_grad_input": "dgrad",
              "conv_grad_weight": "wgrad", "pool_fwd": "fwd", "pool_bwd": "bwd"}


def model_names(spec: str) -> list:
    """`--models`: a comma list of torchvision classification builders, or `all`."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names == ["all"]:
        return list(MODEL_NAMES)
    import torchvision
    known = set(torchvision.models.list_models(module=torchvision.models))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"bench: unknown model(s) {', '.join(unknown) or '(none given)'}; "
                         f"torchvision's classification models or `all` ({', '.join(MODEL_NAMES)})")
    return names


def build_model(name: str) -> torch.nn.Module:
    """torchvision's own builder, untrained (weights=None)."""
    import torchvision
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet's notice that its init will change
        return torchvision.models.get_model(name, weights=None)


def model_loss(out, labels):
    """Cross-entropy; a model that returns several heads in training (googlenet's auxiliary
    classifiers) gets the sum over them, so every layer it ran takes part in the backward."""
    if isinstance(out, torch.Tensor):
        return F.cross_entropy(out, labels)
    return sum(F.cross_entropy(o, labels) for o in out if isinstance(o, torch.Tensor))


def _sgd(params):
    return torch.optim.SGD(params, lr=0.01)


def _inference(model, x):
    def forward():
        with torch.no_grad():
            return model(x)
    return forward


def _last_linear(model):
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1] if linears else None


def outputs_and_features(model, x) -> tuple:
    """The model's output on `x` and the input of its last nn.Linear (None without one). An untrained
    head can hide its features: googlenet's are about 1e-11 against a classifier bias of 1e-2, so its
    logits are the bias whatever the convolutions computed."""
    seen = []
    head = _last_linear(model)
    handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0])) if head else None
    try:
        out = model(x)
    finally:
        if handle:
            handle.remove()
    return out, (seen[-1] if seen else None)


def max_rel_diff(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|: a scale-free distance that stays finite where outputs
    cross zero."""
    ours, theirs = ours.double(), theirs.double()
    scale = theirs.abs().max().item()
    diff = (ours - theirs).abs().max().item()
    return diff / scale if scale > 0 else diff


# ------------------------------------------------------------------------------------------ layers

@dataclass(frozen=True)
class Layer:
    """One geometry as the op sees it (the run adds layout and dtype). Pools keep channels in
    `out_channels` and have groups 1."""
    kind: str  # "conv" | "pool"
    input: tuple  # (N, C, H, W), after the explicit pad of a non-zeros padding_mode
    out_channels: int
    kernel: tuple
    stride: tuple
    padding: tuple  # conv: 2 numbers, or 4 (top, left, bottom, right) for an asymmetric 'same'
    dilation: tuple
    groups: int = 1
    ceil_mode: bool = False

    @property
    def output(self) -> tuple:
        n, c, h, w = self.input
        if self.kind == "pool":
            return (n, c) + tuple(_pool_out(s, k, p, st, d, self.ceil_mode) for s, k, p, st, d in
                                  zip((h, w), self.kernel, self.padding, self.stride, self.dilation))
        pads = self.padding if len(self.padding) == 4 else self.padding * 2
        return (n, self.out_channels) + tuple(_conv_out(s, k, pads[i] + pads[i + 2], st, d) for i, (s, k, st, d) in
                                              enumerate(zip((h, w), self.kernel, self.stride, self.dilation)))

    @property
    def label(self) -> str:
        def two(v):
            return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))
        n, c, h, w = self.input
        geo = f"{self.kernel[0]}x{self.kernel[1]} s{two(self.stride)} p{two(self.padding)}"
        geo += f" d{two(self.dilation)}" if any(d != 1 for d in self.dilation) else ""
        if self.kind == "pool":
            return f"maxpool {geo}{' ceil' if self.ceil_mode else ''} {c}@{h}x{w}"
        groups = "" if self.groups == 1 else (" dw" if self.groups == c == self.out_channels else f" g{self.groups}")
        return f"conv {c}->{self.out_channels} {geo}{groups} @{h}x{w}"


def layer_of(module, input_shape) -> Layer:
    """The geometry of one call of an nn.Conv2d / nn.MaxPool2d on an input of `input_shape`."""
    shape = tuple(input_shape)
    if len(shape) == 3:  # unbatched
        shape = (1,) + shape
    if isinstance(module, torch.nn.Conv2d):
        padding = module.padding
        if module.padding_mode != "zeros":  # the module pads explicitly, then runs a valid convolution
            pads = module._reversed_padding_repeated_twice  # (left, right, top, bottom)
            shape = shape[:2] + (shape[2] + pads[2] + pads[3], shape[3] + pads[0] + pads[1])
            padding = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an even 'same' kernel's note on padding a copy; only reading here
            stride, pad, dil, groups = _conv_args(module.weight, module.stride, padding, module.dilation, module.groups)
        return Layer("conv", shape, module.out_channels, tuple(module.kernel_size), tuple(stride), tuple(pad),
                     tuple(dil), groups)
    kernel = _pair(module.kernel_size, "kernel_size", "max_pool2d")
    stride = kernel if module.stride is None else _pair(module.stride, "stride", "max_pool2d")
    return Layer("pool", shape, shape[1], tuple(kernel), tuple(stride),
                 tuple(_pair(module.padding, "padding", "max_pool2d")),
                 tuple(_pair(module.dilation, "dilation", "max_pool2d")), 1, bool(module.ceil_mode))


def distinct_layers(model, x) -> list:
    """Every nn.Conv2d / nn.MaxPool2d call of one forward of `model` on `x`, grouped by geometry, in
    the order each geometry first runs: [(Layer, [module names, one per call])]. A module called
    twice counts twice: the count weights a layer's time in the model's."""
    names = {m: n for n, m in model.named_modules()}
    calls = []

    def hook(module, args):
        calls.append((layer_of(module, args[0].shape), names[module]))
    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    groups = {}
    for layer, name in calls:
        groups.setdefault(layer, []).append(name)
    return list(groups.items())


def layer_passes(layer: Layer) -> tuple:
    return CONV_PASSES if layer.kind == "conv" else POOL_PASSES


def prepare_layer_pass(layer: Layer, op: str, layout: str, dtype: str, device: str, seed: int = 0) -> tuple:
    """Random tensors of `layer`'s geometry and the two callables of one pass: (Prepared, whose
    `work` is the FLOPs, and the bytes the pass must move at least)."""
    gen = torch.Generator().manual_seed(seed)
    dt, fmt = bench.DTYPES[dtype], bench._fmt(layout)

    def rand(shape, scale=1.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale
        return t.to(device, dt).contiguous(memory_format=fmt)
    x = rand(layer.input)
    if layer.kind == "pool":
        k, st, pad, dil = map(list, (layer.kernel, layer.stride, layer.padding, layer.dilation))
        y, idx = torch.ops.aten.max_pool2d_with_indices(x, k, st, pad, dil, layer.ceil_mode)
        gy = rand(y.shape)
        cu, native = bench.pool_pass(op, x, gy, idx, k, st, pad, dil, layer.ceil_mode)
        return bench.Prepared(cu, native, 0.0, "GB/s"), float(bench.pool_bytes(x, y))
    if len(layer.padding) == 4 and layer.padding[:2] != layer.padding[2:]:
        raise NotImplementedError("not timed: asymmetric padding (aten.convolution takes one pad per side pair)")
    cin = layer.input[1] // layer.groups
    w = rand((layer.out_channels, cin) + layer.kernel, 1.0 / math.sqrt(cin * layer.kernel[0] * layer.kernel[1]))
    gy = rand(layer.output)
    pad = list(layer.padding[:2])
    cu, native = bench.conv_pass(op, x, w, gy, list(layer.stride), pad, list(layer.dilation), layer.groups)
    flops = 2.0 * math.prod(layer.output) * cin * layer.kernel[0] * layer.kernel[1]
    # Each pass reads two of input, weight, grad_output and writes the third.
    return bench.Prepared(cu, native, flops, "GFLOP/s"), float((x.numel() + w.numel() + gy.numel()) * x.element_size())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def time_layer_pass(layer, names, op, layout, dtype, device, timer, timing) -> dict:
    """One row of the layers view. A pass cuconv rejects (or native, or our own preparation) is a
    row with `skipped` set, never an exception."""
    row = {"layer": layer.label, "geometry": asdict(layer), "modules": names, "count": len(names), "pass": op,
           "layout": layout, "dtype": dtype, "skipped": None}
    try:
        prep, nbytes = prepare_layer_pass(layer, op, layout, dtype, device)
    except Exception as e:  # noqa: BLE001  (a report row, whatever the failure)
        row["skipped"] = str(e) if str(e).startswith("not timed") else f"setup failed: {_first_line(e)}"
        return row
    for side, fn in (("unsupported by cuconv", prep.cuconv), ("native failed", prep.native)):
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            row["skipped"] = f"{side}: {_first_line(e)}"
            return row
    a, b = bench.time_pair(timer, prep.cuconv, prep.native, **timing)
    row.update(cuconv=vars(a), native=vars(b), ratio=b.median_s / a.median_s, flops=prep.work, bytes=nbytes)
    return row


# ------------------------------------------------------------------------------------------ models

def _model_pair(name, layout, dtype, device, seed):
    """The unconverted model and its converted deep copy (same weights), in `layout`."""
    import cuconv
    torch.manual_seed(seed)
    native = build_model(name).to(device, bench.DTYPES[dtype]).to(memory_format=bench._fmt(layout))
    return native, cuconv.convert(copy.deepcopy(native))


def _inputs(batch, resolution, layout, dtype, device, num_classes, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, resolution, resolution, generator=gen).to(device, bench.DTYPES[dtype])
    labels = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    return x.contiguous(memory_format=bench._fmt(layout)), labels


def _num_classes(model) -> int:
    heads = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    return heads[-1].out_features if isinstance(heads[-1], torch.nn.Linear) else heads[-1].out_channels


def bench_model(name, layout, cfg, timer, timing) -> tuple:
    """Rows of the models view for one model and layout: the correctness check (untimed), then
    inference, then the training step (last: its SGD steps change the weights of each side)."""
    base = {"model": name, "layout": layout, "batch": cfg["batch"], "dtype": cfg["dtype"],
            "resolution": cfg["resolution"]}
    check = dict(base, max_rel_diff=None, output_rel_diff=None, features_rel_diff=None,
                 tol=CHECK_TOL.get(cfg["dtype"], CHECK_TOL_DEFAULT), ok=None, error=None)
    rows = [dict(base, **{"pass": p, "skipped": None}) for p in MODEL_PASSES if p in cfg["passes"]]
    try:
        native, ours = _model_pair(name, layout, cfg["dtype"], cfg["device"], cfg["seed"])
        x, labels = _inputs(cfg["batch"], cfg["resolution"], layout, cfg["dtype"], cfg["device"], _num_classes(native),
                            cfg["seed"])
        native.eval(), ours.eval()
        with torch.no_grad():
            (out_a, feat_a), (out_b, feat_b) = outputs_and_features(ours, x), outputs_and_features(native, x)
        check["output_rel_diff"] = max_rel_diff(out_a, out_b)
        check["features_rel_diff"] = None if feat_b is None else max_rel_diff(feat_a, feat_b)
        check["max_rel_diff"] = max(d for d in (check["output_rel_diff"], check["features_rel_diff"]) if d is not None)
        check["ok"] = check["max_rel_diff"] <= check["tol"]
    except Exception as e:  # noqa: BLE001  (the model's rows say why, the run goes on)
        check["error"] = _first_line(e)
        for row in rows:
            row["skipped"] = f"error: {check['error']}"
        return check, rows
    for row in sorted(rows, key=lambda r: r["pass"] == "train_step"):
        training = row["pass"] == "train_step"
        native.train(training), ours.train(training)
        if training:
            fns = (bench.train_step(ours, x, labels, _sgd, model_loss),
                   bench.train_step(native, x, labels, _sgd, model_loss))
        else:
            fns = (_inference(ours, x), _inference(native, x))
        try:
            a, b = bench.time_pair(timer, *fns, **timing)
        except Exception as e:  # noqa: BLE001
            row["skipped"] = f"error: {_first_line(e)}"
            continue
        row.update(cuconv=vars(a), native=vars(b), ratio=b.median_s / a.median_s,
                   cuconv_img_s=cfg["batch"] / a.median_s, native_img_s=cfg["batch"] / b.median_s)
    return check, rows


def capture_layers(name, cfg):
    """distinct_layers of the model `name` at the run's batch, resolution and dtype, or the error
    that stopped it (as a string)."""
    try:
        native = build_model(name).to(cfg["device"], bench.DTYPES[cfg["dtype"]])
        x, _ = _inputs(cfg["batch"], cfg["resolution"], "nchw", cfg["dtype"], cfg["device"], 1, cfg["seed"])
        return distinct_layers(native, x)
    except Exception as e:  # noqa: BLE001
        return f"error: {_first_line(e)}"


def bench_layers(name, groups, layout, cfg, timer, timing, layer_filter=None) -> list:
    """Rows of the layers view for one model and layout; `groups` from capture_layers."""
    base = {"model": name, "batch": cfg["batch"], "resolution": cfg["resolution"]}
    if isinstance(groups, str):
        return [dict(base, layout=layout, layer=None, modules=[], count=0, skipped=groups, dtype=cfg["dtype"],
                     **{"pass": None})]
    rows = []
    for layer, names in groups:
        if layer_filter and not (bench._matches(layer.label, layer_filter) or
                                 any(bench._matches(n, layer_filter) for n in names)):
            continue
        for op in layer_passes(layer):
            if op in cfg["passes"]:
                rows.append(dict(base, **time_layer_pass(layer, names, op, layout, cfg["dtype"], cfg["device"], timer,
                                                         timing)))
    return rows


# ----------------------------------------------------------------------------------------- derived

def finish(report: dict) -> None:
    """Fields that depend on the final ceiling or on other rows: each layer pass's bound, its rates
    as shares of the ceiling, its share of the model's training step, and the geometric means."""
    ceil = report["ceiling"]
    balance = ceil["matmul_gflops"] / ceil["copy_gbs"]  # FLOPs per byte where the roofline bends
    steps = {(r["model"], r["layout"]): r for r in report.get("models", [])
             if r["pass"] == "train_step" and not r["skipped"]}
    for row in report.get("layers", []):
        if row.get("skipped") or row.get("layer") is None:
            continue
        row["bound"] = "memory" if row["flops"] / row["bytes"] < balance else "compute"
        step = steps.get((row["model"], row["layout"]))
        for side in ("cuconv", "native"):
            t = row[side]["median_s"]
            row[f"{side}_bw_share"] = row["bytes"] / t / 1e9 / ceil["copy_gbs"]
            row[f"{side}_flop_share"] = row["flops"] / t / 1e9 / ceil["matmul_gflops"]
            row[f"{side}_model_share"] = row["count"] * t / step[side]["median_s"] if step else None
        row["weighted_delta_s"] = row["count"] * (row["cuconv"]["median_s"] - row["native"]["median_s"])
    report["summary"] = summarize(report.get("models", []), report.get("checks", []))


def _geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summarize(rows, checks) -> dict:
    timed = [r for r in rows if not r["skipped"]]
    out = {"geomean_ratio": _geomean([r["ratio"] for r in timed]), "timed_rows": len(timed),
           "slower_rows": sum(r["ratio"] < 1 for r in timed), "skipped_rows": len(rows) - len(timed),
           "checks_failed": [f"{c['model']}/{c['layout']}" for c in checks if c["ok"] is False or c["error"]],
           "by_pass_layout": {}}
    for p in MODEL_PASSES:
        for layout in LAYOUTS:
            g = _geomean([r["ratio"] for r in timed if r["pass"] == p and r["layout"] == layout])
            if g is not None:
                out["by_pass_layout"][f"{p}/{layout}"] = g
    return out


# ------------------------------------------------------------------------------------------ output

def _table(head, body, left=1) -> str:
    """Plain-text columns; the first `left` columns left-aligned, the others right-aligned."""
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(head)]
    fmt_row = lambda row: "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt_row(head), "  ".join("-" * w for w in widths)] + [fmt_row(r) for r in body])


def _pivot(report):
    """{model: {(pass, layout): row}}, models in run order."""
    out = {}
    for r in report.get("models", []):
        out.setdefault(r["model"], {})[(r["pass"], r["layout"])] = r
    return out


def _times(row) -> str:
    return f"{bench._ms(row['cuconv']['median_s'])} / {bench._ms(row['native']['median_s'])}"


def _cell(row) -> tuple:
    if row is None:
        return ("", "")
    if row["skipped"]:
        return ("skipped", row["skipped"][:40])
    return (_times(row), f"{row['ratio']:.2f}")


def _check_cell(report, model) -> str:
    cells = []
    for c in report.get("checks", []):
        if c["model"] == model:
            mark = "" if c["ok"] else " WRONG"
            cells.append("error" if c["error"] else f"{c['max_rel_diff']:.1e}{mark}")
    return ", ".join(cells)


def _model_columns(report):
    layouts = report["settings"]["layouts"]
    passes = [p for p in MODEL_PASSES if any(r["pass"] == p for r in report.get("models", []))]
    return [(p, lay) for p in passes for lay in layouts]


def _short_layout(layout):
    return "NHWC" if layout == "channels_last" else "NCHW"


def format_models(report) -> str:
    cols = _model_columns(report)
    head = ["model"]
    for p, lay in cols:
        head += [f"{PASS_NAMES[p]} {_short_layout(lay)} ms cuconv / native", "ratio"]
    head.append("max rel diff " + ", ".join(map(_short_layout, report["settings"]["layouts"])))
    body = []
    for model, cells in _pivot(report).items():
        line = [model]
        for key in cols:
            line += list(_cell(cells.get(key)))
        body.append(line + [_check_cell(report, model)])
    return _table(head, body)


def format_summary(report) -> str:
    s = report["summary"]
    if s["geomean_ratio"] is None:
        text = "geometric mean: no timed model rows"
    else:
        parts = ", ".join(f"{k.replace('train_step', 'train').replace('inference', 'infer')} {v:.2f}"
                          for k, v in s["by_pass_layout"].items())
        text = (f"geometric mean of native/cuconv over {s['timed_rows']} model rows (models x passes x layouts): "
                f"{s['geomean_ratio']:.2f}; by pass/layout: {parts}; rows where cuconv is slower: "
                f"{s['slower_rows']} of {s['timed_rows']}")
    if s["skipped_rows"]:
        text += f"; skipped rows: {s['skipped_rows']}"
    if s["checks_failed"]:
        text += f"; outputs disagree or fail: {', '.join(s['checks_failed'])}"
    return text


def _share(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def layer_ceiling_shares(row) -> tuple:
    """The shares of the ceiling that bounds the pass: copy bandwidth or matmul rate."""
    key = "bw_share" if row["bound"] == "memory" else "flop_share"
    return row[f"cuconv_{key}"], row[f"native_{key}"]


SORTS = ("ratio", "lost")


def sorted_layers(rows, sort: str = "ratio"):
    """Skipped rows first (they need a look), then by ratio, lowest first, or ("lost") by the time the
    model loses there per forward, calls x (cuconv - native), largest first."""
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}; choose from {', '.join(SORTS)}")
    if sort == "lost":
        return sorted(rows, key=lambda r: (not r.get("skipped"), -(r.get("weighted_delta_s") or 0.0)))
    return sorted(rows, key=lambda r: (not r.get("skipped"), r.get("ratio") or 0.0))


def format_layers(report, top: int = 0, sort: str = "ratio") -> str:
    head = ["model", "layout", "pass", "layer", "first module", "calls", "cuconv ms", "native ms", "ratio", "bound",
            "%ceil cu/nat", "share cu/nat", "calls x diff ms"]
    body, skipped = [], []
    groups = {}
    for r in report.get("layers", []):
        groups.setdefault((r["model"], r["layout"]), []).append(r)
    for (model, layout), rows in groups.items():
        ordered = sorted_layers(rows, sort)
        for r in ordered[:top] if top else ordered:
            if r.get("skipped"):
                skipped.append(f"{model} {_short_layout(layout)} {PASS_NAMES.get(r['pass'], '-')} "
                               f"{r.get('layer')}: {r['skipped']}")
                continue
            cu_ceil, nat_ceil = layer_ceiling_shares(r)
            body.append([model, _short_layout(layout), PASS_NAMES[r["pass"]], r["layer"], r["modules"][0],
                         str(r["count"]), bench._ms(r["cuconv"]["median_s"]), bench._ms(r["native"]["median_s"]),
                         f"{r['ratio']:.2f}", "mem" if r["bound"] == "memory" else "flop",
                         f"{_share(cu_ceil)}/{_share(nat_ceil)}",
                         f"{_share(r['cuconv_model_share'])}/{_share(r['native_model_share'])}",
                         f"{r['weighted_delta_s'] * 1e3:+.2f}"])
    out = _table(head, body, left=5) if body else "no timed layer passes"
    return out + ("\n" + "\n".join(skipped) if skipped else "")


LEGEND = ("ratio = native time / cuconv time (>1: cuconv faster); ms = medians; models: a training step "
          "(forward, cross-entropy on random labels, backward, SGD lr 0.01) and an inference forward (eval, "
          "no_grad); max rel diff = max|cuconv - native| / max|native| of the inference outputs and of the features "
          "entering the last Linear layer (the larger), untimed. Layers: "
          "calls = how many times the geometry runs in one forward; bound = memory where FLOPs/bytes is below the "
          "ceiling's matmul/copy balance; %ceil = bytes/time of the copy ceiling (mem) or FLOP/s of the matmul "
          "ceiling (flop; FLOPs of the direct convolution), above 100% where the data stays in cache or Winograd "
          "saves multiplications; share = calls x time / the model's "
          "training step, same side and layout; calls x diff ms = calls x (cuconv - native) ms, > 0 where cuconv "
          "loses time")


def format_markdown(report, top: int = 5, sort: str = "ratio") -> str:
    """The models table and, per model and layout, the first `top` layer passes in `sort` order, as
    Markdown."""
    out = []
    if report.get("models"):
        cols = _model_columns(report)
        out.append("| model | " + " | ".join(f"{PASS_NAMES[p]} {_short_layout(lay)} ms | ratio" for p, lay in cols)
                   + " | max rel diff " + ", ".join(map(_short_layout, report["settings"]["layouts"])) + " |")
        out.append("|---" * (2 + 2 * len(cols)) + "|")
        for model, cells in _pivot(report).items():
            out.append(f"| {model} | " + " | ".join(" | ".join(_cell(cells.get(k))) for k in cols)
                       + f" | {_check_cell(report, model)} |")
        out.append("")
        out.append(format_summary(report))
    if report.get("layers"):
        out.append("")
        out.append("| model | layout | pass | layer (calls) | cuconv / native ms | ratio | bound, %ceil cu/nat | "
                   "share cu/nat |")
        out.append("|---|---|---|---|---|---|---|---|")
        groups = {}
        for r in report["layers"]:
            groups.setdefault((r["model"], r["layout"]), []).append(r)
        for (model, layout), rows in groups.items():
            for r in sorted_layers(rows, sort)[:top]:
                if r.get("skipped"):
                    out.append(f"| {model} | {_short_layout(layout)} | {PASS_NAMES.get(r['pass'], '-')} | "
                               f"{r.get('layer')} | {r['skipped']} | | | |")
                    continue
                cu_ceil, nat_ceil = layer_ceiling_shares(r)
                out.append(f"| {model} | {_short_layout(layout)} | {PASS_NAMES[r['pass']]} | {r['layer']} "
                           f"({r['count']}) | {_times(r)} | "
                           f"{r['ratio']:.2f} | {'mem' if r['bound'] == 'memory' else 'flop'} "
                           f"{_share(cu_ceil)}/{_share(nat_ceil)} | "
                           f"{_share(r['cuconv_model_share'])}/{_share(r['native_model_share'])} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- run

def run(args) -> dict:
    names = model_names(args.models)
    layouts = LAYOUTS if (args.layout or "both") == "both" else (args.layout,)
    batches = [int(b) for b in args.batch.split(",")] if args.batch else [32]
    dtypes = args.dtype.split(",")
    views = ("models", "layers") if args.view == "both" else (args.view,)
    ops = bench._split(args.ops)
    passes = [p for p in MODEL_PASSES + CONV_PASSES + POOL_PASSES if bench._matches(p, ops)]
    report, timer = bench.open_run(args, layouts, batches)
    report["settings"].update(models=names, resolution=args.resolution, views=list(views), passes=passes)
    report.update(models=[], checks=[], layers=[])
    if not args.no_header:
        print(bench.format_header(report).rsplit("\n", 1)[0], flush=True)
        print(LEGEND, flush=True)
    timing = dict(warmup=args.warmup, min_reps=args.min_reps, max_reps=args.max_reps, target_s=args.target_time)
    layer_filter = bench._split(args.shapes)
    for name in names:
        for dtype in dtypes:
            for batch in batches:
                cfg = dict(batch=batch, dtype=dtype, resolution=args.resolution, device=report["settings"]["device"],
                           seed=0, passes=passes)
                groups = capture_layers(name, cfg) if "layers" in views else None
                for layout in layouts:
                    if "models" in views:
                        check, rows = bench_model(name, layout, cfg, timer, timing)
                        report["checks"].append(check)
                        report["models"].extend(rows)
                        print(_progress_line(check, rows), flush=True)
                    if "layers" in views:
                        rows = bench_layers(name, groups, layout, cfg, timer, timing, layer_filter)
                        report["layers"].extend(rows)
                        if args.verbose:
                            print(f"{name} {layout}: {len(rows)} layer passes", flush=True)
    bench.close_run(report, args)
    finish(report)
    print(bench.format_header(report).splitlines()[3])
    if report["models"]:
        print(format_models(report))
        print(format_summary(report))
    if report["layers"]:
        print(format_layers(report, args.top, args.sort))
    print(f"load average at end: {report['machine']['loadavg_end']}")
    return report


def _progress_line(check, rows) -> str:
    parts = [f"{check['model']} {_short_layout(check['layout'])}:"]
    for r in rows:
        parts.append(f"{PASS_NAMES[r['pass']]} " + ("skipped" if r["skipped"] else f"{_times(r)} ms {r['ratio']:.2f}x"))
    parts.append("check " + (check["error"] or f"{check['max_rel_diff']:.1e}"))
    return " ".join(parts)

"""What `tfq.compress` reports: per layer and for the whole model."""

import dataclasses


@dataclasses.dataclass


class LayerReport:
    """What happened to one layer."""

    name: str
    kind: str
    scheme: str  # "float" when the layer was left alone
    params: int
    sparsity: float = 0.0
    bits: float = 32.0
    relative_error: float = 0.0  # ||W_q - W|| / ||W|| over the layer's kernels
    corrections: tuple = ()


@dataclasses.dataclass


class CompressionReport:
    """Summary returned by `compress(..., return_report=True)`.

    Sizes count weight bytes as the converter stores them: 4 bytes per float
    parameter, packed codes (`bits` per weight, docs/format.md) plus one
    float32 scale per channel for compressed kernels.
    """

    mode: str
    scheme: str
    layers: list
    float_bytes: int
    compressed_bytes: int
    seconds: float
    accuracy_before: float = None
    accuracy_after: float = None
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def ratio(self):
        return self.float_bytes / max(self.compressed_bytes, 1)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["ratio"] = self.ratio
        return d

    def to_markdown(self):
        lines = [f"**tfq.compress** ({self.mode}, scheme `{self.scheme}`, {self.seconds:.1f} s)", ""]
        lines.append("| | before | after |")
        lines.append("|---|---|---|")
        if self.accuracy_before is not None or self.accuracy_after is not None:
            lines.append(f"| accuracy | {_fmt_acc(self.accuracy_before)} | {_fmt_acc(self.accuracy_after)} |")
        lines.append(f"| weight bytes | {self.float_bytes:,} | {self.compressed_bytes:,} |")
        lines.append(f"| compression | 1.0x | {self.ratio:.1f}x |")
        lines.append("")
        lines.append("| layer | kind | scheme | params | bits | sparsity | rel. error | corrections |")
        lines.append("|---|---|---|---:|---:|---:|---:|---|")
        for l in self.layers:
            lines.append(
                f"| {l.name} | {l.kind} | {l.scheme} | {l.params:,} | {l.bits:g} | {l.sparsity:.1%} "
                f"| {l.relative_error:.3f} | {', '.join(l.corrections) or '-'} |"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def _fmt_acc(a):
    return "-" if a is None else f"{100 * a:.2f}%"

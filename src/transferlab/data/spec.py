"""What a datamodule tells the run about its data, so models never hard-code shapes."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataSpec:
    """Shape and label space of a dataset.

    modality: "signal" (C, L), "image" (C, H, W), "tabular" (F,), or "text" (L,) token ids.
    Text also gives the tokenizer's special ids (pad for attention masks, mask for masked-language
    modeling, bos/eos for causal language modeling and generation); None where it has none.
    """

    modality: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...] = field(default_factory=tuple)
    vocab_size: int | None = None
    pad_id: int | None = None
    mask_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None

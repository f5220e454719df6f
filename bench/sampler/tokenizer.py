"""A stand-in umt5 tokenizer: the pinned WanVideoWrapper snapshot lacks spiece.model/tokenizer.json.

Why: a memory benchmark only needs text mapped to ids of the right vocabulary (256,000 pieces plus
the 300 <extra_id_N> tokens of configs/T5_tokenizer/tokenizer_config.json, embedding rows 256,384)
and padded to the encoder's 512 tokens. The real vocabulary changes which ids come out, not the
tensor shapes the encoder sees, so peaks and timings are unaffected. Writes tokenizer.json (the
`tokenizers` format AutoTokenizer reads) next to the snapshot's two config files.

    python bench/sampler/tokenizer.py --into ComfyUI/custom_nodes/ComfyUI-WanVideoWrapper/configs/T5_tokenizer
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

BASE_PIECES = 256_000


def build(config_dir: Path) -> Path:
    """Write tokenizer.json into config_dir and return its path."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    config = json.loads((config_dir / "tokenizer_config.json").read_text())
    specials = ["<pad>", "</s>", "<s>", "<unk>"]
    seen = set(specials)
    pieces: list[tuple[str, float]] = [(s, 0.0) for s in specials]
    chars = string.ascii_letters + string.digits + string.punctuation
    for candidate in ["▁", *chars, *("▁" + c for c in chars)]:
        if candidate not in seen:
            seen.add(candidate)
            pieces.append((candidate, -1.0 - len(pieces) / 1000))
    n = 0
    while len(pieces) < BASE_PIECES:
        piece = f"▁w{n}"
        n += 1
        pieces.append((piece, -100.0 - len(pieces) / 1000))
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    added = config["added_tokens_decoder"]
    extra = sorted((int(i), v["content"]) for i, v in added.items() if int(i) >= BASE_PIECES)
    assert [i for i, _ in extra] == list(range(BASE_PIECES, BASE_PIECES + len(extra))), (
        "extra ids not contiguous"
    )
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tokenizer.add_special_tokens([AddedToken(c, special=True, normalized=False) for _, c in extra])
    out = config_dir / "tokenizer.json"
    tokenizer.save(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--into", type=Path, required=True)
    out = build(parser.parse_args().into)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Shared builders: a tiny random BERT backbone with a tiny word-piece tokenizer."""

from __future__ import annotations

import json
import string
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

WORDS = [
    *("good great fine love best happy nice bad awful hate worst sad poor ugly".split(" ")),
    *("the a movie film was is it this that and very not plot acting".split(" ")),
    *("question answer user assistant".split(" ")),
]


def tiny_dims(vocab_size: int, max_positions: int) -> dict[str, Any]:
    """The size every tiny test model shares: 2 layers, 32 wide, 2 heads."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )


def build_tiny_backbone(folder: Path, *, token_types: bool = True) -> Path:
    """Save a 2-layer, 32-wide BERT (no classifier head) and a word-piece tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *pieces]
    vocab += [f"##{p}" for p in pieces]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        **tiny_dims(len(vocab), 128),
        type_vocab_size=2 if token_types else 1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-initialised backbone folder, built once per test session."""
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def shared_data() -> Path:
    """The project's shared labelled data, or a clean skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only in the project's workspace)")
    return SHARED_DATA


def texts_file(path: Path) -> Path:
    """Ranking lists with and without prompts, of very different lengths."""
    rows = [
        {"prompt": "the question", "responses": ["good film", "bad"]},
        {"responses": ["a very long " + "movie was good and the plot " * 12, "sad", "ugly"]},
        {"prompt": "q " * 40, "responses": ["love it", "hate it"]},
        *({"responses": [f"nice {w}", f"poor {w}"]} for w in ("film", "plot", "acting", "it")),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def checkpoint_of(backbone: Path, out: Path) -> Path:
    """A checkpoint of ``backbone`` with a fresh reward head, saved as training saves one."""
    from training.model import load_reward_model, save_checkpoint

    save_checkpoint(load_reward_model(backbone), out)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path) -> Path:
    """A checkpoint of the tiny backbone (random reward head), shared by the session."""
    return checkpoint_of(tiny_backbone, tmp_path_factory.mktemp("ckpt") / "ckpt")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path) -> Path:
    """A tiny model exported by the real export (fp32): what the service tests serve."""
    from training.export import ExportConfig, export_model

    tmp = tmp_path_factory.mktemp("exported")
    ckpt = checkpoint_of(tiny_backbone, tmp / "ckpt")
    out = tmp / "model"
    export_model(ExportConfig(ckpt, out, reference=texts_file(tmp / "ref.jsonl")))
    return out


CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""Qwen2's chat template (ChatML with a default system turn)."""


def build_chat_tokenizer(folder: Path, template: str | None = CHATML) -> Path:
    """A byte-level tokenizer (every byte a token, no merges) with BOS/EOS/pad and ChatML
    control tokens, a BOS-adding post-processor like Llama's, and ``template``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"])
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[bos]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    if template is not None:
        fast.chat_template = template
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return folder


def start_in_thread(server: uvicorn.Server) -> tuple[threading.Thread, int]:
    """Run a uvicorn server on its thread until it listens; returns (thread, port)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return thread, port

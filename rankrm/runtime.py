"""Score texts with an exported model: onnxruntime and tokenizers only, never torch.

The service's engine and the export checks both use :class:`OnnxRewardModel`, so what
export verifies is exactly what the service runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from rankrm.chat import ChatTemplate, Message
from rankrm.encoding import (
    Batch,
    EncodingSpec,
    Tokens,
    configure_tokenizer,
    encode_conversation,
    encode_pairs,
    normalise_message,
    pad_batch,
    render_messages,
)
from rankrm.manifest import (
    MANIFEST,
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    ManifestError,
    Normalization,
    load_manifest,
)


def make_session(
    path: Path, threads: int | None = None, providers: Sequence[str] = (), spin: bool = True
) -> Any:
    """An onnxruntime session with all graph optimisations and ``threads`` intra-op threads.

    ``spin=False`` stops idle worker threads from busy-waiting for the next run: a server
    sharing its cores with an event loop wants the CPU back between batches.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    chosen = list(providers) or ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=chosen)


@dataclass
class OnnxRewardModel:
    """An ONNX reward model and its tokenizer, loaded for scoring."""

    session: Any
    tokenizer: Tokenizer
    input_names: list[str]
    pad_token_id: int
    normalization: Normalization
    manifest: Manifest | None = None
    chat: ChatTemplate | None = None  # the model's chat template, when it reads conversations

    @classmethod
    def from_files(
        cls,
        model_path: Path,
        tokenizer: Tokenizer,
        spec: EncodingSpec,
        input_names: list[str],
        pad_token_id: int,
        threads: int | None = None,
        chat: ChatTemplate | None = None,
    ) -> OnnxRewardModel:
        """A model file without a manifest (used by export before the manifest exists)."""
        session = make_session(model_path, threads)
        configured = configure_tokenizer(tokenizer, spec)
        return cls(session, configured, input_names, pad_token_id, Normalization(), chat=chat)

    @classmethod
    def load(
        cls,
        folder: Path | str,
        *,
        threads: int | None = None,
        providers: Sequence[str] = (),
        verify: bool = True,
        spin: bool = True,
    ) -> OnnxRewardModel:
        """Load ``folder`` (manifest checked, checksums verified unless ``verify`` is off)."""
        folder = Path(folder)
        manifest = load_manifest(folder, verify=verify)
        try:
            raw = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as exc:  # the tokenizers library raises a bare Exception
            raise ManifestError(f"{folder / TOKENIZER_FILE}: not a tokenizer ({exc})") from exc
        if manifest.pad_token_id >= raw.get_vocab_size():
            raise ManifestError(
                f"{folder / MANIFEST}: pad_token_id {manifest.pad_token_id} is outside the "
                f"tokenizer's vocabulary of {raw.get_vocab_size()}"
            )
        tokenizer = configure_tokenizer(raw, manifest.encoding)
        try:
            session = make_session(folder / MODEL_FILE, threads, providers, spin)
        except Exception as exc:  # onnxruntime's own exception types
            raise ManifestError(
                f"{folder / MODEL_FILE}: onnxruntime cannot load it ({exc})"
            ) from exc
        graph = [i.name for i in session.get_inputs()]
        if sorted(graph) != sorted(manifest.input_names):
            raise ManifestError(
                f"{folder / MANIFEST}: inputs {manifest.input_names} do not match the graph's "
                f"{graph}"
            )
        return cls(
            session,
            tokenizer,
            manifest.input_names,
            manifest.pad_token_id,
            manifest.normalization,
            manifest,
            manifest.chat,
        )

    def first_batch(self) -> None:
        """Score two short texts and check the rewards are numbers: a model that loads but
        cannot run (a wrong graph, a broken file that was not verified) fails at start, not
        on the first request."""
        try:
            rewards = self.raw_scores([None, None], ["a good answer", "a bad answer"])
        except Exception as exc:  # onnxruntime's own exception types
            raise ManifestError(f"the model failed its first batch: {exc}") from exc
        if rewards.shape != (2,) or not np.isfinite(rewards).all():
            raise ManifestError(
                f"the model's first batch gave {rewards.tolist()}, not two finite rewards"
            )

    def encode(
        self, prompts: Sequence[str | None], responses: Sequence[str], *, parallel: bool = True
    ) -> list[Tokens]:
        """Token ids of each input (the shared contract in ``rankrm.encoding``), compact."""
        return encode_pairs(self.tokenizer, self.chat, prompts, responses, parallel=parallel)

    def encode_conversations(self, conversations: Sequence[Sequence[Message]]) -> list[Tokens]:
        """Token ids of whole conversations (the last message is the answer scored): rendered
        by the model's chat template, or, without one, the pair encoding of the rendered
        prompt turns and the answer."""
        if self.chat is not None:
            return [encode_conversation(self.tokenizer, self.chat, c) for c in conversations]
        prompts = [render_messages(c[:-1]) if len(c) > 1 else None for c in conversations]
        answers = [normalise_message(c[-1])["content"] for c in conversations]
        return encode_pairs(self.tokenizer, None, prompts, answers)

    @property
    def heads(self) -> list[str]:
        """The names of a multi-output head's outputs (empty for a one-output model)."""
        return self.manifest.heads if self.manifest is not None else []

    def run(self, batch: Batch, *, with_heads: bool = False) -> np.ndarray:
        """Raw rewards ``(N,)`` float32 of one padded batch; ``with_heads`` (a model with a
        multi-output head): ``(N, 1 + H)``, the reward then each output."""
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        feed = {name: arrays[name] for name in self.input_names}
        if with_heads and self.heads:
            rewards, heads = self.session.run(["reward", "heads"], feed)
            columns = [np.asarray(rewards).reshape(-1, 1), np.asarray(heads)]
            return np.concatenate(columns, axis=1).astype(np.float32)
        (rewards,) = self.session.run(["reward"], feed)
        return np.asarray(rewards, dtype=np.float32).reshape(-1)

    def run_encodings(
        self, encodings: Sequence[Tokens | Encoding], *, with_heads: bool = False
    ) -> np.ndarray:
        """Raw rewards of already-encoded inputs, padded together as one batch (see run)."""
        return self.run(pad_batch(encodings, self.pad_token_id), with_heads=with_heads)

    def raw_scores(
        self, prompts: Sequence[str | None], responses: Sequence[str], batch_size: int = 32
    ) -> np.ndarray:
        """Raw rewards ``(N,)`` in input order; batches group inputs of similar length."""
        return self.raw_scores_of(self.encode(prompts, responses), batch_size)

    def raw_scores_of(
        self, encodings: Sequence[Tokens | Encoding], batch_size: int = 32
    ) -> np.ndarray:
        """Raw rewards ``(N,)`` of encoded inputs, in order, batched by length."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.empty(len(encodings), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.run_encodings([encodings[i] for i in idx])
        return out

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Apply the manifest's normalisation (offset and scale)."""
        normalized: np.ndarray = self.normalization.apply(raw)
        return normalized

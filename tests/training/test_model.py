"""The reward model: one forward pass per batch, dynamic padding, checkpoint round trip."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rankrm.encoding import EncodingSpec
from training.data import RankingList
from training.model import latest_checkpoint, load_reward_model, save_checkpoint

LISTS = [
    RankingList(
        "the question", ("good film", "bad", "the worst movie that was not good"), (1, 2, 3)
    ),
    RankingList.ordered(None, ["love it", "hate it"]),
]


def test_all_responses_of_a_batch_go_through_one_padded_forward(tiny_backbone: Path) -> None:
    rm = load_reward_model(tiny_backbone)
    rm.model.eval()
    calls: list[tuple[int, ...]] = []

    def hook(_module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        calls.append(tuple(kwargs["input_ids"].shape))

    handle = rm.model.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        rewards, mask = rm.forward_lists(LISTS)
    handle.remove()
    longest = max(
        len(e.ids)
        for e in rm.tokenizer.encode_batch(
            [(lst.prompt, r) if lst.prompt else r for lst in LISTS for r in lst.responses]
        )
    )
    assert calls == [(5, longest)]  # 5 texts, padded to the longest of this batch only
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    assert rewards[1, 2] == 0
    alone = rm.score([None], ["hate it"])
    assert rewards[1, 1].item() == pytest.approx(alone.item(), abs=1e-5)


def test_checkpoint_loads_with_from_pretrained_and_gives_same_rewards(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    rm = load_reward_model(tiny_backbone, EncodingSpec(max_length=16, truncation_side="right"))
    out = tmp_path / "ckpt"
    save_checkpoint(rm, out, {"eval_metrics.json": {"step": 1}})
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    assert json.loads((out / "eval_metrics.json").read_text()) == {"step": 1}

    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.num_labels == 1
    batch = rm.batch(["q", None], ["good film", "bad"])
    rm.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(**batch).logits, rm.model(**batch).logits)

    again = load_reward_model(out)
    assert again.spec == EncodingSpec(max_length=16, truncation_side="right")
    torch.testing.assert_close(again.score(["q"], ["good film"]), rm.score(["q"], ["good film"]))


def test_a_reloaded_checkpoint_computes_bit_for_bit_what_was_saved(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    """What makes resume exact: same weights give the same bits whichever way they were
    loaded (a backbone plus a new head, or a checkpoint), forward and backward."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        saved = load_reward_model(tiny_backbone)
        save_checkpoint(saved, tmp_path / "ckpt")
        loaded = load_reward_model(tmp_path / "ckpt")
        rng = random.Random(0)
        words = "the a movie film was good bad not very plot acting great awful".split()

        def text(i: int) -> str:
            return " ".join(rng.choices(words, k=rng.randint(1, 9))) + f" {i}"

        # Lists of 2 to 4 texts: batches of odd sizes, where kernels take alignment-dependent
        # tail paths (without fresh storage this test fails).
        lists = [
            RankingList.ordered(None, [text(i) for i in range(rng.randint(2, 4))])
            for _ in range(64)
        ]
        results = []
        for rm in (saved, loaded):
            batches = [rm.forward_lists(lists[i : i + 8]) for i in range(0, 64, 8)]
            rewards = torch.cat([r[mask] for r, mask in batches])
            rewards.square().sum().backward()
            grads = [p.grad for p in rm.model.parameters() if p.grad is not None]
            assert len(grads) == len(list(rm.model.parameters()))
            results.append((rewards.detach(), grads))
    finally:
        torch.set_num_threads(threads)
    (want, want_grads), (got, got_grads) = results
    assert torch.equal(got, want)
    assert all(torch.equal(g, w) for g, w in zip(got_grads, want_grads, strict=True))


def test_checkpoint_swap_keeps_a_complete_copy(tiny_backbone: Path, tmp_path: Path) -> None:
    rm = load_reward_model(tiny_backbone)
    out = tmp_path / "last"
    save_checkpoint(rm, out)
    save_checkpoint(rm, out)  # the second write replaces the first as a whole
    assert latest_checkpoint(out) == out
    assert [p.name for p in tmp_path.iterdir()] == ["last"]  # no staging or .old left over
    out.rename(tmp_path / "last.old")  # as if killed between the two renames
    assert latest_checkpoint(out) == tmp_path / "last.old"


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_reward_model(tmp_path)


def test_head_weights_name_the_outputs(tmp_path: Path) -> None:
    from training.model import weights_of

    labels = ["helpful", "harmless"]
    assert weights_of(tmp_path, labels, None) == (0.5, 0.5)
    assert weights_of(tmp_path, labels, {"harmless": 2.0}) == (0.0, 2.0)
    with pytest.raises(ValueError, match="no output named 'kind'; its outputs are helpful"):
        weights_of(tmp_path, labels, {"kind": 1.0})
    with pytest.raises(ValueError, match="the model has one output"):
        weights_of(tmp_path, [], {"helpful": 1.0})


@pytest.mark.parametrize(
    ("config", "labels"),
    [
        ({"architectures": ["BertModel"], "id2label": {"0": "a", "1": "b"}}, []),  # backbone
        ({"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "a"}}, []),
        (
            {"architectures": ["LlamaForSequenceClassification"], "id2label": {"1": "b", "0": "a"}},
            ["a", "b"],
        ),
    ],
)
def test_head_labels_are_read_from_a_classifiers_config(
    tmp_path: Path, config: dict[str, Any], labels: list[str]
) -> None:
    from training.model import head_labels

    (tmp_path / "config.json").write_text(json.dumps(config))
    assert head_labels(tmp_path) == labels


@pytest.mark.parametrize(
    ("extra", "problem"),
    [({"mean": 0.1, "std": 0}, "std > 0"), ({"mean": "x", "std": 1}, "mean='x'")],
)
def test_openrlhf_statistics_must_be_numbers(
    tmp_path: Path, extra: dict[str, Any], problem: str
) -> None:
    from training.model import OpenRLHFHead

    (tmp_path / "config.json").write_text(json.dumps({"value_head_prefix": "score", **extra}))
    with pytest.raises(ValueError, match=problem):
        OpenRLHFHead.of(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"value_head_prefix": "score"}))
    assert OpenRLHFHead.of(tmp_path) == OpenRLHFHead("score", None)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_checkpoint_tokenizes_as_rankrm_did_when_loaded_the_usual_way(
    tiny_backbone: Path, tmp_path: Path, side: str
) -> None:
    """AutoTokenizer + AutoModelForSequenceClassification and ``tok(prompt, response,
    truncation=True)``: the same token ids and rewards as rankrm's, over-long inputs too."""
    from transformers import AutoTokenizer

    rm = load_reward_model(tiny_backbone, EncodingSpec(max_length=12, truncation_side=side))  # type: ignore[arg-type]
    out = tmp_path / "ckpt"
    save_checkpoint(rm, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    pairs = [
        ("the question", "good film"),
        ("a long question about the film and its plot", "the worst movie that was not good at all"),
    ]
    for prompt, response in pairs:
        theirs = tokenizer(prompt, response, truncation=True, return_tensors="pt")
        ours = rm.batch([prompt], [response])
        assert theirs["input_ids"].tolist() == ours["input_ids"].tolist()
        with torch.no_grad():
            reward = float(model(**theirs).logits[0, 0])
        assert reward == pytest.approx(float(rm.score([prompt], [response])[0]), abs=1e-5)
    assert len(tokenizer(*pairs[1], truncation=True)["input_ids"]) == 12  # it was cut

"""The testbed policy (package ``testbed``): its corpus, tokenizer, chat template, pre-training and probe."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.config import SAMPLE_RECORDS, DatasetConfig
from data_prep.prompts import build_messages
from relate_common.ad_format import parse_ad
from relate_common.records import AdRecord, load_records
from testbed.config import PretrainConfig, TokenizerConfig
from testbed.corpus import build_corpus, fact_units, invented_records, recombined_records, train_records
from testbed.model import CHATML_TEMPLATE, train_tokenizer
from testbed.pretrain import EncodedPair, collate, lr_at
from testbed.probe import copies_prompt_fact, probe_rows

from tests.fixtures import REPO


@pytest.fixture(scope="module")
def records() -> list[AdRecord]:
    return load_records(SAMPLE_RECORDS)[0]


def test_corpus_holds_no_val_record_and_is_deterministic(records):
    val_ids = {r.id for r in records} - {r.id for r in train_records(records, DatasetConfig())}
    assert 20 <= len(val_ids) <= 50  # the RL set's 10% val split of 320 records
    pairs = build_corpus(records, recombined=40, seed=3, prompt_style="compact")
    assert not val_ids & {p.record_id for p in pairs}
    val_queries = {r.query for r in records if r.id in val_ids} - {r.query for r in records if r.id not in val_ids}
    assert not any(q in m["content"] for p in pairs for m in p.messages for q in val_queries)
    assert pairs == build_corpus(records, recombined=40, seed=3, prompt_style="compact")
    assert pairs != build_corpus(records, recombined=40, seed=4, prompt_style="compact")
    assert len(pairs) == 9 * (len(records) - len(val_ids) + 40)
    assert all(parse_ad(p.ad).ok for p in pairs)


def test_recombined_ads_carry_facts_found_only_in_their_prompt(records):
    """The corpus teaches copying: a recombined record's best-practice ad states its own bidword and a
    selling point, and its points come from records of its language."""
    train = train_records(records, DatasetConfig())
    made = recombined_records(train, 60, seed=0)
    assert made == recombined_records(train, 60, seed=0)
    def shape(text: str) -> str:  # a selling point with its numbers blanked
        return re.sub(r"\d+", "#", text, flags=re.ASCII)

    pools = {lang: {shape(p) for r in train if r.language == lang for p in r.selling_points} for lang in ("zh", "en")}
    for r in made:
        assert 2 <= len(r.selling_points) <= 4 and {shape(p) for p in r.selling_points} <= pools[r.language]
        assert r.query in {t.query for t in train if t.language == r.language}
        assert r.bidword in {t.bidword for t in train if t.language == r.language}
        assert not r.title and not r.description
    original = {(r.query, r.bidword) for r in train}
    assert sum((r.query, r.bidword) not in original for r in made) >= 50
    numbered = [p for r in made for p in r.selling_points if re.search(r"\d", p)]
    known = {p for r in train for p in r.selling_points}
    assert numbered and sum(p not in known for p in numbered) >= 0.8 * len(numbered)  # numbers redrawn
    pairs = build_corpus(train, recombined=60, seed=0, prompt_style="compact")
    by_id = {r.id: r for r in made}
    best = [p for p in pairs if p.record_id in by_id and p.variant == "best_practice"]
    assert len(best) == 60
    assert all(copies_prompt_fact(by_id[p.record_id], p.ad) for p in best)


def test_invented_facts_are_new_phrases_of_their_languages_own_units(records):
    """Invented facts are strings of the train records' own words (en) or characters (zh), in the unit
    counts the docstring gives, new as phrases; the corpus holds the share asked for."""
    train = train_records(records, DatasetConfig())
    made = invented_records(train, 80, seed=0)
    assert made == invented_records(train, 80, seed=0) and made != invented_records(train, 80, seed=1)
    assert {r.language for r in made} == {"en", "zh"}
    known = {t for r in train for t in (r.bidword, *r.selling_points)}
    for r in made:
        units = set(fact_units([t for t in train if t.language == r.language], r.language))
        assert 2 <= len(r.selling_points) <= 4 and r.query in {t.query for t in train if t.language == r.language}
        for fact, (low, high) in ((r.bidword, (1, 3)), *((p, (2, 5)) for p in r.selling_points)):
            parts = list(fact) if r.language == "zh" else fact.split(" ")
            extra = 1 if r.language == "zh" else 0
            assert set(parts) <= units and low + extra <= len(parts) <= high + extra, fact
    assert sum(r.bidword in known for r in made) <= 8  # a one-word bidword may happen to exist
    pairs = build_corpus(records, recombined=40, invented_share=0.25, seed=0, prompt_style="compact")
    assert sum(p.record_id.startswith("invented-") for p in pairs) == 9 * 10
    assert sum(p.record_id.startswith("recombined-") for p in pairs) == 9 * 30
    with pytest.raises(ValueError, match="invented_share"):
        build_corpus(records, recombined=4, invented_share=1.5, seed=0, prompt_style="compact")


def test_left_out_variants_never_reach_the_corpus(records):
    pairs = build_corpus(records, recombined=10, seed=0, prompt_style="compact", left_out_variants=("overlong",))
    names = {p.variant for p in pairs}
    assert "overlong" not in names and len(names) == 8
    with pytest.raises(ValueError, match="unknown simulator variants"):
        build_corpus(records, recombined=1, seed=0, prompt_style="compact", left_out_variants=("overlng",))


def test_chatml_template_renders_prompts_as_smollm2_does(tokenizer, records):
    """The testbed reads the same prompt text as SmolLM2 (every RL prompt opens with a system turn)."""
    tb = train_tokenizer(["Title: x\nDescription: y", "标题：广告"], TokenizerConfig(vocab_size=300), CHATML_TEMPLATE)
    for record in (records[0], records[-1]):
        messages = build_messages(record, "compact")
        ours = tb.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert ours == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert tb.decode(tb(ours, add_special_tokens=False)["input_ids"]) == ours  # byte-level: lossless, zh too


def test_tokenizer_is_deterministic_and_ends_turns_with_im_end():
    texts = ["Title: Emergency plumber\nDescription: Licensed since 2009.", "标题：专业减重\n描述：营养师一对一定制食谱。"] * 20
    a = train_tokenizer(texts, TokenizerConfig(vocab_size=400), CHATML_TEMPLATE)
    b = train_tokenizer(texts, TokenizerConfig(vocab_size=400), CHATML_TEMPLATE)
    assert a.get_vocab() == b.get_vocab()
    assert a.eos_token == "<|im_end|>" and a.pad_token == "<|endoftext|>" and a.eos_token_id != a.pad_token_id
    assert a("<|im_end|>", add_special_tokens=False)["input_ids"] == [a.eos_token_id]


@given(st.lists(st.tuples(st.lists(st.integers(3, 99), min_size=1, max_size=6),
                          st.lists(st.integers(3, 99), min_size=1, max_size=6)), min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_collate_trains_on_ad_tokens_only(pairs):
    batch = collate([EncodedPair(p, r) for p, r in pairs], pad_id=0)
    for row, (p, r) in enumerate(pairs):
        labels = batch["labels"][row].tolist()
        assert labels[:len(p)] == [-100] * len(p)
        assert labels[len(p):len(p) + len(r)] == r
        assert set(labels[len(p) + len(r):]) <= {-100}
        assert batch["attention_mask"][row].sum() == len(p) + len(r)
        assert batch["input_ids"][row, :len(p) + len(r)].tolist() == p + r


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    c = PretrainConfig(steps=100, warmup_steps=10, lr=1e-3)
    lrs = [lr_at(s, c) for s in range(100)]
    assert lrs[9] == pytest.approx(1e-3) and all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lr_at(100, c) == pytest.approx(1e-4)


@given(st.sampled_from(["zh", "en"]), st.text(max_size=30), st.integers(0, 2))
@settings(max_examples=80, deadline=None)
def test_copies_prompt_fact_finds_the_bidword_or_a_point_anywhere(language, noise, which):
    record = AdRecord(id="x", query="q", bidword="Hair Loss", selling_points=["Clinics in Dallas", "首月399元"],
                      language=language)
    fact = ["hair loss", "Clinics in Dallas", "首月399元"][which]
    assert copies_prompt_fact(record, noise + fact + noise)
    assert not copies_prompt_fact(record, noise.replace("Dallas", "") if "Hair Loss".casefold() not in noise.casefold()
                                  and "399" not in noise else "Title: nothing")


def test_probe_rows_split_by_language():
    zh = AdRecord(id="a", query="q", bidword="减肥", selling_points=["首月399元"], language="zh")
    en = AdRecord(id="b", query="q", bidword="plumber", selling_points=["24/7"], language="en")
    table = probe_rows([zh, en, en], [["标题：减肥方案\n描述：首月399元，立即咨询。"] * 2,
                                      ["Title: Plumber\nDescription: Call 24/7 today.", "Title: x"],
                                      ["nothing", "nothing"]])
    assert table["zh"] == {"prompts": 1, "format_valid": 1.0, "copies_fact": 1.0, "distinct_samples": 0.5}
    assert table["en"]["format_valid"] == 0.5 and table["en"]["copies_fact"] == 0.5
    assert table["en"]["distinct_samples"] == pytest.approx(0.75)
    assert table["all"]["prompts"] == 3 and table["all"]["format_valid"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def tiny_testbed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("testbed") / "model"
    # one torch thread: a float sum's order, so the weights, depend on the thread count
    proc = subprocess.run([sys.executable, "-m", "testbed", "build", "--output", str(out), "--steps", "40",
                           "--recombined", "30", "--threads", "1", "--no-progress"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


def test_build_writes_a_loadable_model_whose_loss_fell(tiny_testbed):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = json.loads((tiny_testbed / "testbed.json").read_text())
    assert "not a model to deploy" in report["name"]
    variants = 9 - len(report["config"]["pretrain"]["left_out_variants"])
    assert report["corpus"]["pairs"] == variants * report["corpus"]["records"]
    losses = [row["loss"] for row in report["curve"]]
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < losses[0] - 1.0
    model = AutoModelForCausalLM.from_pretrained(tiny_testbed)
    tok = AutoTokenizer.from_pretrained(tiny_testbed)
    assert model.config.vocab_size == len(tok) == report["vocab_size"]
    assert model.config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert not list(tiny_testbed.parent.glob("model.tmp*"))


def test_build_is_deterministic_for_a_seed(tiny_testbed, tmp_path):
    """A second build of the same seed, through the typed ``run_build`` the CLI calls, gives the same weights."""
    import dataclasses

    import torch
    from safetensors.torch import load_file
    from testbed.__main__ import BuildRun, run_build
    from testbed.config import TestbedConfig

    again = tmp_path / "again"
    d = TestbedConfig()
    config = dataclasses.replace(d, pretrain=dataclasses.replace(d.pretrain, steps=40, recombined_records=30,
                                                                 threads=1))
    threads = torch.get_num_threads()
    try:
        assert run_build(BuildRun(output=again, testbed=config, progress=False)) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = load_file(tiny_testbed / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_verl_sft_dataset_masks_exactly_the_ad_on_the_testbed_tokenizer(tiny_testbed, tmp_path, records):
    """verl's MultiTurnSFTDataset renders turns one at a time: with the testbed's template its loss mask
    covers the ad and the end of turn, and its tokens equal the whole conversation's."""
    import pandas as pd
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    tok = AutoTokenizer.from_pretrained(tiny_testbed)
    ad = "Title: Plumber today\nDescription: Licensed since 2009."
    messages = [*build_messages(records[-1], "compact"), {"role": "assistant", "content": ad}]
    pd.DataFrame([{"messages": messages}]).to_parquet(tmp_path / "sft.parquet")
    ds = MultiTurnSFTDataset([str(tmp_path / "sft.parquet")], tok, OmegaConf.create({"max_length": 1024,
                                                                                      "truncation": "error"}))
    item = ds[0]
    keep = item["attention_mask"].bool()  # the dataset pads to max_length
    ids, mask = item["input_ids"][keep].tolist(), item["loss_mask"][keep].tolist()
    whole = tok.apply_chat_template(messages, tokenize=False)
    assert tok.decode(ids) == whole
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained.startswith(ad + "<|im_end|>")


def test_probe_cli_prints_both_languages(tiny_testbed, tmp_path):
    """``python -m testbed probe`` on the real RL val split (data_prep/build_dataset.py, compact prompts)."""
    import data_prep.build_dataset as build_dataset

    assert build_dataset.main(["--input", str(SAMPLE_RECORDS), "--output-dir", str(tmp_path / "ds"),
                               "--prompt-style", "compact"])["written"]["val"] > 0
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "-m", "testbed", "probe", "--model", str(tiny_testbed), "--data",
                           str(tmp_path / "ds" / "val.parquet"), "--samples", "2", "--max-new-tokens", "8",
                           "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    val = train_records(load_records(SAMPLE_RECORDS)[0], DatasetConfig())
    n_val = len(load_records(SAMPLE_RECORDS)[0]) - len(val)
    assert set(figures["greedy"]) == {"all", "en", "zh"} and figures["greedy"]["all"]["prompts"] == n_val
    assert figures["greedy"]["en"]["prompts"] + figures["greedy"]["zh"]["prompts"] == n_val
    assert "| zh |" in proc.stdout and "| en |" in proc.stdout

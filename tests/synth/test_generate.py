"""`pgbench synth`: deterministic files, read back by the real task adapters, and the
generator's own answers score the metric's maximum."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pgbench import cli
from pgbench.errors import InputError
from pgbench.synth import chance, generate
from pgbench.task import load_task

SIZES = {"train": 4, "val": 3, "test": 3}
NO_JAVA = [f for f in generate.FAMILIES if f != "cococap"]  # captions' chance needs Java


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate.generate(out, seed=1, sizes=SIZES, image_size=64, with_chance=False)
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = (generate.generate(tmp_path / n, seed=s, sizes=SIZES, family_names=NO_JAVA, image_size=48)
               for n, s in (("a", 5), ("b", 5), ("c", 6)))
    assert a == b and a != c
    fa, fb, fc = (_files(tmp_path / n) for n in "abc")
    assert fa == fb
    assert fa != fc


def test_a_split_does_not_depend_on_the_size_of_another(tmp_path):
    sizes = dict(SIZES)
    generate.generate(tmp_path / "a", seed=2, sizes=sizes, family_names=["vqav2"], image_size=48)
    generate.generate(tmp_path / "b", seed=2, sizes=sizes | {"train": 7}, family_names=["vqav2"], image_size=48)
    name = "v2_OpenEnded_mscoco_val2014_questions.json"
    assert (tmp_path / "a/vqav2" / name).read_bytes() == (tmp_path / "b/vqav2" / name).read_bytes()


def _oracle(root: Path, path: str) -> dict[str, str]:
    lines = (root / path).read_text().splitlines()
    return {d["id"]: d["prediction"] for d in map(json.loads, lines)}


def _options(info) -> dict:
    return info["options"]


def test_every_family_reads_back_through_its_adapter(synth_dir):
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["sizes"] == SIZES
    for family, info in manifest["families"].items():
        task = load_task(info["task"])
        assert info["eval_split"] in task.splits
        for names in info["splits"].values():
            for split in names:
                examples = task.examples(synth_dir / info["data"], split, _options(info))
                assert len(examples) == info["examples"][split], (family, split)
                assert {e.id for e in examples} == set(_oracle(synth_dir, info["oracle"][split])), (family, split)
                for e in examples:
                    assert (synth_dir / info["data"] / e.image).is_file(), (family, e.image)


# The headline key of each metric, and its maximum on the generator's own answers.
MAXIMUM = {"vqav2": ("accuracy", 1.0), "textvqa": ("accuracy", 1.0), "docvqa": ("anls", 1.0),
           "rsvqa_lr": ("accuracy_average", 1.0), "detection": ("map", 1.0),
           "cococap": ("bleu_4", 1.0)}  # a reference caption: BLEU-4 = 1 (CIDEr has no fixed maximum)


@pytest.mark.parametrize("family", [f if f != "cococap" else pytest.param(f, marks=pytest.mark.slow)
                                    for f in sorted(MAXIMUM)])
def test_generator_answers_score_the_maximum(synth_dir, family):
    """(cococap is slow: pycocoevalcap starts Java three times.)"""
    if family == "cococap" and not shutil.which("java"):
        pytest.skip("pycocoevalcap needs java")
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    info = manifest["families"][family]
    task = load_task(info["task"])
    split = info["eval_split"]
    examples = task.examples(synth_dir / info["data"], split, _options(info))
    key, best = MAXIMUM[family]
    got = task.score(examples, _oracle(synth_dir, info["oracle"][split]), task.resolve_options(_options(info)))
    assert got[key] == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize("family", NO_JAVA)
def test_chance_is_well_below_the_maximum(family):
    """Measured on text-only records (nothing drawn), at a size where priors settle."""
    recs = generate.sample_records(family, seed=0, sizes={"train": 300, "val": 100, "test": 100}, image_size=64)
    level = chance.chance_level(family, recs)
    assert level["metric"] == MAXIMUM.get(family, ("miou",))[0]
    assert 0.0 <= level["score"] < 0.75


def test_cli_writes_and_reports(tmp_path, capsys):
    out = tmp_path / "d"
    assert cli.main(["synth", "--out", str(out), "--seed", "0", "--sizes", "train=8,val=2,test=2",
                     "--families", "vqav2,rsvqa_lr", "--image-size", "48",
                     "--tokenizer", str(tmp_path / "tok"), "--vocab-size", "1490"]) == 0
    printed = capsys.readouterr().out
    assert "vqav2" in printed and "rsvqa_lr" in printed and "chance" in printed
    assert (tmp_path / "tok" / "tokenizer.model").is_file() and (tmp_path / "tok" / "tokenizer.json").is_file()
    assert sorted(json.loads((out / "manifest.json").read_text())["families"]) == ["rsvqa_lr", "vqav2"]


@pytest.mark.parametrize("argv, message", [
    (["--families", "vqa"], "unknown synthetic family vqa"),
    (["--sizes", "train=-1"], "--sizes"),
    (["--sizes", "dev=3"], "--sizes"),
    (["--image-size", "8"], "at least 32"),
    (["--vae", "v.npz", "--vae-steps", "0"], "--vae-steps"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, argv, message):
    assert cli.main(["synth", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_parse_sizes_keeps_defaults():
    assert generate.parse_sizes("val=5") == generate.DEFAULT_SIZES | {"val": 5}
    with pytest.raises(InputError):
        generate.parse_sizes("train")


def test_reusable_manifest_needs_same_settings_and_this_generator(tmp_path):
    assert generate.reusable_manifest(tmp_path) is None  # no manifest
    manifest = {"generator_version": generate.GENERATOR_VERSION, "seed": 3, "image_size": 64, "families": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert generate.reusable_manifest(tmp_path, seed=3, image_size=64) == manifest
    assert generate.reusable_manifest(tmp_path, seed=4) is None
    (tmp_path / "manifest.json").write_text(json.dumps(dict(manifest, generator_version=1)))
    assert generate.reusable_manifest(tmp_path, seed=3) is None

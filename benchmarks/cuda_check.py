"""The CUDA path, checked on a GPU: same answers as on the CPU, results where the model lives.

Run where a GPU is present (CI has none; the test suite runs on the CPU):

    python benchmarks/cuda_check.py [--json out.json]

Each check prints PASS/FAIL and one line of numbers; the exit status is the number of failures.

* closed form: METHOD.md's linear toy on the GPU, exact Jacobian, σ within 1e-4 of
  σ_ik = σ_S·sqrt(τ/P)/|w_i|; the sampled default within 5 % (median) of it;
* CPU = GPU: a tiny BERT's logit explained on both (different random streams), the linearised σ
  (exact Jacobian: no randomness) within 1e-3, the optimised σ within Monte-Carlo error;
* results on the model's device, contiguous, in its dtype; a half-precision model gives half
  attributions; ``torch.autocast(bfloat16)`` gives finite σ that rank like float32's;
* ``torch.no_grad()``, the attention mask found in ``additional_forward_args``, NoiseTunnel,
  model weights, ``.grad`` and the training flag untouched; σ_S (feature_std) fitted on GPU.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from captum_entropy import EntropyAttribution, FeatureStats
from common import import_file, spearman, write_json

tiny = import_file(Path(__file__).resolve().parents[1] / "tests" / "tiny_models.py")  # the test suite's tiny models

RESULTS: dict[str, dict] = {}


def check(name: str, ok: bool, **numbers) -> None:
    RESULTS[name] = {"pass": bool(ok), **{k: (float(v) if torch.is_tensor(v) else v) for k, v in numbers.items()}}
    print(("PASS " if ok else "FAIL ") + name + " " + json.dumps(RESULTS[name]), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # feature_std not given: these checks compare like with like
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    dev = torch.device("cuda")
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)

    # closed form on the GPU
    torch.manual_seed(0)
    toy = tiny.LinearToy().to(dev)
    x = (torch.randn(4, 5, 256) / 100).to(dev)
    std = toy(torch.randn(100, 5, 256).to(dev) / 100).std(0)
    ea = EntropyAttribution(toy, toy.emb)
    exact = ea.attribute_result(x, feature_std=std, exact_jacobian=256)
    tau = exact.settings["tolerance"]
    expected = std.pow(-2).mean().pow(-0.5) * (tau / 5) ** 0.5 / tiny.WEIGHTS.to(dev).abs()
    err = (exact.sigma[..., 0] / expected - 1).abs().max()
    check("closed form, exact Jacobian", err < 1e-4 and exact.sigma.device.type == "cuda", max_rel_err=err)
    sampled = ea.attribute_result(x, feature_std=std)
    med = (sampled.sigma[..., 0] / expected - 1).abs().median()
    check("closed form, sampled default", med < 0.05, median_rel_err=med, converged=int(sampled.converged.sum()))

    # the same tiny BERT on CPU and GPU
    model = tiny.tiny_bert(dropout=0.1)
    ids, mask = tiny.padded_batch()
    target = torch.tensor([0, 1, 1, 0])
    cpu = EntropyAttribution(tiny.bert_logits(model), model.bert.embeddings).attribute_result(
        ids, target=target, additional_forward_args=(mask,), exact_jacobian=64)
    model.to(dev)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids_d, mask_d = ids.to(dev), mask.to(dev)
    ea = EntropyAttribution(tiny.bert_logits(model), model.bert.embeddings)
    gpu = ea.attribute_result(ids_d, target=target.to(dev), additional_forward_args=(mask_d,), exact_jacobian=64)
    m = mask.bool()
    lin = (gpu.linear_sigma.cpu()[m] / cpu.linear_sigma[m]).log().abs().max()
    opt = (gpu.sigma.cpu()[m] / cpu.sigma[m]).log().abs().median()
    check("CPU = GPU, linearised (exact Jacobian)", lin < 1e-3, max_abs_dlog=lin)
    check("CPU = GPU, optimised (different draws)", opt < 0.05, median_abs_dlog=opt,
          mask_source=gpu.settings["mask"], converged_gpu=int(gpu.converged.sum()), converged_cpu=int(cpu.converged.sum()))

    with torch.no_grad():
        attr = ea.attribute(ids_d, target=target.to(dev), additional_forward_args=(mask_d,))
    untouched = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    untouched &= all(p.grad is None for p in model.parameters()) and not model.training
    check("attribute under no_grad: device, dtype, contiguous, padding 0, model untouched",
          attr.device.type == "cuda" and attr.dtype == torch.float32 and attr.is_contiguous()
          and bool((attr[~mask_d.bool()] == 0).all()) and untouched, shape=list(attr.shape))

    from captum.attr import NoiseTunnel

    def from_embeds(embeds, attention_mask):  # NoiseTunnel perturbs float inputs: feed word vectors
        return model(inputs_embeds=embeds, attention_mask=attention_mask).logits

    embeds = model.bert.embeddings.word_embeddings(ids_d).detach()
    nt = NoiseTunnel(EntropyAttribution(from_embeds, model.bert.embeddings)).attribute(
        embeds, nt_type="smoothgrad", nt_samples=2, stdevs=0.01, target=target.to(dev),
        additional_forward_args=(mask_d,), max_steps=20)
    check("NoiseTunnel on the GPU", nt.device.type == "cuda" and bool(torch.isfinite(nt).all()), shape=list(nt.shape))

    # precision: a half model, and autocast
    half = tiny.tiny_bert(dropout=0.1).to(dev).half()
    attr_h = EntropyAttribution(tiny.bert_logits(half), half.bert.embeddings).attribute(
        ids_d, target=target.to(dev), additional_forward_args=(mask_d,))
    check("float16 model gives float16 attributions", attr_h.dtype == torch.float16 and bool(torch.isfinite(attr_h).all()))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        amp = ea.attribute_result(ids_d, target=target.to(dev), additional_forward_args=(mask_d,))
    rhos = [spearman(amp.sigma[b][m[b]].float(), gpu.sigma[b][m[b]]) for b in range(len(ids))]
    check("autocast bfloat16: finite, ranks like float32", bool(torch.isfinite(amp.sigma[m.to(dev)]).all()) and min(rhos) > 0.8,
          spearman_min=min(rhos), dtype=str(amp.sigma.dtype))

    stats = FeatureStats().fit(tiny.bert_logits(model), [(ids_d, mask_d)], layers={"l1": model.bert.encoder.layer[0]},
                               mask_index=1)
    check("FeatureStats on the GPU", bool(torch.isfinite(stats["l1"]).all()), device=str(stats["l1"].device))

    if args.json:
        write_json(args.json, RESULTS)
    return sum(not r["pass"] for r in RESULTS.values())


if __name__ == "__main__":
    raise SystemExit(main())

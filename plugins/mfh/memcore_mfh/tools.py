"""MFH commands: figures (``memcore viz mfh RUN``) and the one-shot evaluation on novel classes
(``memcore mfh-eval RUN``).

Both rebuild the EMA generator from a checkpoint and take the novel classes as the complement of
the run's ``data.classes`` (the base classes it trained on), from the held-out ``test`` split when
the dataset has one. Heavy imports happen inside the handlers so ``memcore --help`` stays fast.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import memcore


# -- loading a run ----------------------------------------------------------------------------
def load_run(run: str, use_ema: bool = True):
    """(G in eval mode, the run's recipe as a dict, the checkpoint state)."""
    import tomli
    loaded = memcore.load_run(run, use_ema=use_ema)
    if loaded.recipe.generator.kind != "mfh":
        raise memcore.MemcoreError(f"{run}: not an MFH run (generator.kind is not 'mfh')")
    return loaded.G, tomli.loads(loaded.state["recipe"]), loaded.state


def load_split(recipe: dict, split: str | None, classes=()):
    """The run's dataset with ``classes`` kept (empty: all, original labels) from ``split`` where
    the dataset has splits (None: the run's own split)."""
    import attrs
    table = dict(recipe["data"])
    kind = table.pop("kind")
    entry = memcore.get_registry().get("dataset", kind)
    options_cls = entry.load_config()
    table.update(classes=list(classes), limit=None)
    if split is not None and "split" in {f.name for f in attrs.fields(options_cls)}:
        table["split"] = split
    return entry.load_factory()(options_cls(**table), memcore.BuildContext(0, 0, role="data"))


def base_classes(recipe: dict) -> list:
    base = list(recipe["data"].get("classes") or [])
    if not base:
        raise memcore.MemcoreError("data.classes of the run is empty: it trained on every class, "
                                   "so there are no novel classes to test on")
    return base


def has_splits(recipe: dict) -> bool:
    import attrs
    entry = memcore.get_registry().get("dataset", recipe["data"]["kind"])
    return "split" in {f.name for f in attrs.fields(entry.load_config())}


def novel_data(recipe: dict, split: str = "test"):
    """Held-out images (float, [-1, 1]) and labels of the classes the run did not train on."""
    import torch
    base = base_classes(recipe)
    dataset = load_split(recipe, split)
    keep = ~torch.isin(dataset.labels, torch.tensor(base))
    names = [dataset.class_names[int(c)] for c in dataset.labels[keep].unique()]
    return memcore.to_float(dataset.images[keep]), dataset.labels[keep], names


def one_per_class(labels, generator, count: int | None = None):
    """Index of one random image per class (classes in increasing order)."""
    import torch
    classes = labels.unique()[:count]
    return torch.stack([torch.nonzero(labels == c)[:, 0][torch.randint(int((labels == c).sum()),
                        (1,), generator=generator)][0] for c in classes])


def save_grid(images, path: Path, nrow: int) -> Path:
    from torchvision.utils import save_image
    with memcore.safewrite.replacing(path) as tmp:
        save_image(images.add(1).div(2).clamp(0, 1), tmp, nrow=nrow, padding=2, pad_value=1.0)
    return path


# -- memcore viz mfh --------------------------------------------------------------------------
def configure_viz(p):
    from memcore.cliargs import count, image_file, out_folder, seed64
    p.add_argument("run", help="Run directory or checkpoint file.")
    p.add_argument("--exemplar", action="append", metavar="IMAGE", type=image_file,
                   help="Exemplar images, one per row (default: one held-out image per novel class).")
    p.add_argument("--rows", type=count(1, 64), default=6,
                   help="Novel classes shown (default exemplars).")
    p.add_argument("--slots", type=count(1, 64), default=8,
                   help="CI slots (columns) of the Fig. 5 grid.")
    p.add_argument("--steps", type=count(2, 64), default=8, help="Interpolation steps (Fig. 10).")
    p.add_argument("--seed", type=seed64, default=0)
    p.add_argument("--no-ema", action="store_true", help="Use the trained G, not the EMA G.")
    p.add_argument("--out", type=out_folder, help="Folder for the figures (default: RUN/viz-mfh).")


def cmd_viz(args) -> int:
    import torch
    G, recipe, state = load_run(args.run, not args.no_ema)
    gen = torch.Generator().manual_seed(args.seed)
    if args.exemplar:
        from PIL import Image
        import numpy as np
        images = []
        for p in args.exemplar:
            with Image.open(p) as im:
                im = im.convert("L" if G.channels == 1 else "RGB").resize((G.resolution,) * 2)
                arr = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
            images.append(arr.reshape(G.resolution, G.resolution, G.channels).permute(2, 0, 1))
        exemplars = memcore.to_float(torch.stack(images))
    else:
        images, labels, _ = novel_data(recipe)
        exemplars = images[one_per_class(labels, gen, args.rows)]
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent.parent
    out = memcore.safewrite.folder(Path(args.out) if args.out else run_dir / "viz-mfh",
                                   inside=None if args.out else run_dir)
    k = G.memory.num_slots
    slots = torch.randperm(k, generator=gen)[:args.slots]
    a, b = torch.randperm(k, generator=gen)[:2]
    t = torch.linspace(0, 1, args.steps)[:, None]
    path_ci = (1 - t) * G.memory.slots[a] + t * G.memory.slots[b]           # (steps, w)
    same_slot, interpolation = [], []
    with torch.no_grad():
        for x in exemplars:
            cr = G.encode_cr(x[None])
            same_slot += [x[None], G(cr=cr, slot=slots)]
            interpolation += [x[None], G(cr=cr, ci=path_ci)]
    fig5 = save_grid(torch.cat(same_slot), out / "fig5-same-slot.png", 1 + len(slots))
    fig10 = save_grid(torch.cat(interpolation), out / "fig10-interpolation.png", 1 + args.steps)
    print(f"step {state['step']}: first column the exemplar; columns of {fig5} share a CI slot "
          f"({slots.tolist()}); {fig10} interpolates slot {int(a)} -> {int(b)}")
    return 0


# -- memcore mfh-eval -------------------------------------------------------------------------
def configure_eval(p):
    from memcore.cliargs import count, seed64
    p.add_argument("run", help="Run directory or checkpoint file.")
    p.add_argument("--per-class", type=count(2, 10_000), default=50,
                   help="Generated and real images per novel class for FID/KID (paper: 50).")
    p.add_argument("--episodes", type=count(1, 100_000), default=300,
                   help="ProtoNet N-way 1-shot episodes.")
    p.add_argument("--way", type=_way, default=0,
                   help="N of the N-way 1-shot episodes: each episode draws N of the novel classes; "
                        "0 (default): every novel class, and 5-way too (Table 2) where there are "
                        "more than 5.")
    p.add_argument("--queries", type=count(1, 1000), default=5,
                   help="Query images per class per episode.")
    p.add_argument("--supports", type=count(1, 1000), default=10,
                   help="Candidate support images per class (each gets --generated images).")
    p.add_argument("--generated", type=count(0, 1000), default=5,
                   help="Generated images added per support.")
    p.add_argument("--hit-exemplars", type=count(1, 1000), default=10,
                   help="Exemplars per novel class for class-hit and slot-pair diversity.")
    p.add_argument("--hit-slots", type=count(1, 1000), default=10,
                   help="Images generated per exemplar (distinct random slots) for class-hit.")
    p.add_argument("--judge-steps", type=count(1, 100_000), default=800,
                   help="Training steps (batch 64) of the judge and of the base-only feature net.")
    p.add_argument("--judge-per-class", type=count(1, 100_000), default=500,
                   help="Training images per class for the judge and the base-only feature net.")
    p.add_argument("--extractor", default="efficientnet-lite0",
                   help="A registered feature extractor (memcore list extractor) for FID/KID.")
    p.add_argument("--max-real", type=count(1, 100_000), default=150,
                   help="Held-out real images used per novel class (embedding is the slow part).")
    p.add_argument("--seed", type=seed64, default=0)
    p.add_argument("--no-ema", action="store_true", help="Use the trained G, not the EMA G.")


def _way(text: str) -> int:
    import argparse
    if not text.isdigit() or len(text) > 6 or int(text) == 1:
        raise argparse.ArgumentTypeError(f"expected 0 (every novel class) or a number of classes "
                                         f">= 2, got {text!r}")
    return int(text)


def extractor(name: str):
    """(features(uint8 images) -> (N, D) float64, protocol dict) from a registered extractor."""
    ext = memcore.build_component("extractor", {"kind": name}, where="--extractor")
    ext.preflight()
    return (lambda imgs: ext.extract(imgs)["features"].double()), ext.protocol()


def distribution_scores(fake_u8, real_u8, name: str) -> dict:
    """FID and KID of one class through the registered metrics (torch-fidelity)."""
    scores = {}
    for kind in ("fid", "kid"):
        out = memcore.score_images(kind, fake_u8, real_u8, where="mfh-eval", extractor=name,
                                   num_real=len(real_u8))
        scores[kind] = out[kind]
    return scores


def mean_pairwise_distance(f, p: float = 2.0) -> float:
    """Mean distance over all ordered pairs of different rows."""
    import torch
    d = torch.cdist(f, f, p=p)
    return float(d.sum() / (len(f) * (len(f) - 1)))


def mean_pairwise_l1(images) -> float:
    """Mean per-pixel L1 over all pairs of different images (the units of eq. 9)."""
    flat = images.flatten(1).double()
    return mean_pairwise_distance(flat, 1.0) / flat.shape[1]


def address_information(probs) -> dict:
    """Per-image address entropy H(slot | image) (mean over images), the entropy of the mean
    address H(slot), and their difference: the mutual information I(image; slot), in nats."""
    def entropy(p):
        return -(p * p.clamp_min(1e-30).log()).sum(-1)
    per_image = float(entropy(probs.double()).mean())
    marginal = float(entropy(probs.double().mean(0)))
    return {"entropy_per_image": per_image, "entropy_marginal": marginal,
            "mutual_information": marginal - per_image,
            "log_slots": math.log(probs.shape[-1])}


def episode_classes(classes: list, way: int, gen) -> list:
    """The classes of one N-way episode: ``way`` of them drawn at random (0: all, in order)."""
    import torch
    if not way:
        return list(classes)
    return [classes[i] for i in torch.randperm(len(classes), generator=gen)[:way].tolist()]


def protonet_accuracy(feats, labels, support_pool, generated, episodes, queries, gen, way=0):
    """N-way 1-shot nearest-prototype accuracy on novel classes, in a frozen feature space.

    ``support_pool[c]``: indices of candidate support images of class c; ``generated[c][j]``:
    features of images generated from ``support_pool[c][j]``; ``way``: classes per episode (0:
    all). Returns mean and 95% interval of accuracy without and with the generated images
    averaged into the prototype (Table 2 style).
    """
    import torch
    classes = sorted(support_pool)
    plain, augmented = [], []
    for _ in range(episodes):
        protos_plain, protos_aug, query_f, query_y = [], [], [], []
        for y, c in enumerate(episode_classes(classes, way, gen)):
            j = int(torch.randint(len(support_pool[c]), (1,), generator=gen))
            s = support_pool[c][j]
            others = torch.nonzero(labels == c)[:, 0]
            others = others[~torch.isin(others, torch.as_tensor(support_pool[c]))]
            q = others[torch.randperm(len(others), generator=gen)[:queries]]
            protos_plain.append(feats[s])
            protos_aug.append(torch.cat([feats[s][None], generated[c][j]]).mean(0))
            query_f.append(feats[q])
            query_y.append(torch.full((len(q),), y))
        qf, qy = torch.cat(query_f), torch.cat(query_y)
        for protos, acc in ((protos_plain, plain), (protos_aug, augmented)):
            pred = torch.cdist(qf, torch.stack(protos)).argmin(1)
            acc.append(float((pred == qy).double().mean()))
    def summary(values):
        t = torch.tensor(values, dtype=torch.float64)
        return float(t.mean()), float(1.96 * t.std() / len(t) ** 0.5)
    return summary(plain), summary(augmented)


def protonet_ways(way: int, novel: int) -> list[int]:
    """--way N: that N; 0: every novel class, plus Table 2's 5-way where there are more than 5."""
    if way:
        return [way]
    return [novel, 5] if novel > 5 else [novel]


def _mean_of(per_class: dict, key: str) -> float | None:
    """The mean over the novel classes; None where a class has no value."""
    values = [v[key] for v in per_class.values()]
    return None if None in values else sum(values) / len(values)


def train_judges(recipe: dict, args, novel_positions):
    """The judge (every class of the dataset) and the base-only feature net (the run's base
    classes), from the training split, or — for a dataset without splits — from every image but
    the held-out novel ones the evaluation uses (``novel_positions``)."""
    import torch
    from .judge import per_class_subset, train_classifier
    gen = torch.Generator().manual_seed(args.seed)
    if has_splits(recipe):
        data = load_split(recipe, "train")
        pool = torch.arange(len(data.labels))
    else:
        data = load_split(recipe, None)
        pool = torch.ones(len(data.labels), dtype=torch.bool)
        pool[novel_positions] = False
        pool = torch.nonzero(pool)[:, 0]
    labels = data.labels[pool]
    chosen = pool[per_class_subset(labels, args.judge_per_class, gen)]
    images, labels = memcore.to_float(data.images[chosen]), data.labels[chosen]
    judge = train_classifier(images, labels, len(data.class_names), args.judge_steps, args.seed)
    base = base_classes(recipe)
    remap = torch.full((len(data.class_names),), -1, dtype=torch.long)
    remap[torch.tensor(base)] = torch.arange(len(base))
    on_base = remap[labels] >= 0
    base_net = train_classifier(images[on_base], remap[labels[on_base]], len(base),
                                args.judge_steps, args.seed + 1)
    return judge, base_net


def class_measures(G, images, gen, hit_exemplars: int, hit_slots: int):
    """For the held-out images of one novel class: the hallucinations of ``hit_exemplars``
    exemplars (``hit_slots`` distinct random slots each), the reconstructions of every image
    (the addresser's most likely slot) and the soft addresses."""
    import torch
    exemplars = images[torch.randperm(len(images), generator=gen)[:hit_exemplars]]
    k = G.memory.num_slots
    hallucinated = []
    for x in exemplars:
        slots = torch.randperm(k, generator=gen)[:min(hit_slots, k)]
        hallucinated.append(G(cr=G.encode_cr(x[None]), slot=slots))
    probs = G.memory.probabilities(G.E_ci(images))
    slot = probs.argmax(1) if G.memory.addressing != "random" else \
        torch.randint(k, (len(images),), generator=gen)
    reconstructed = G.synthesis(G.E_cr(images), G.memory.read_slots(slot))
    return torch.stack(hallucinated), reconstructed, probs


def cmd_eval(args) -> int:
    import time
    import torch
    started = time.perf_counter()
    G, recipe, state = load_run(args.run, not args.no_ema)
    images, labels, names = novel_data(recipe)
    if args.way > len(names):
        raise memcore.MemcoreError(f"--way {args.way}: the run has only {len(names)} novel "
                                   f"classes ({', '.join(names)})")
    features, described = extractor(args.extractor)
    gen = torch.Generator().manual_seed(args.seed)
    keep = torch.cat([torch.nonzero(labels == c)[:, 0][torch.randperm(int((labels == c).sum()),
                      generator=gen)[:args.max_real]] for c in labels.unique()])
    novel_positions = None
    if not has_splits(recipe):      # where the kept novel images sit in the whole dataset
        every = load_split(recipe, None).labels
        novel_positions = torch.nonzero(~torch.isin(every, torch.tensor(base_classes(recipe))))
        novel_positions = novel_positions[:, 0][keep]
    judge_started = time.perf_counter()
    judge, base_net = train_judges(recipe, args, novel_positions)
    judge_seconds = time.perf_counter() - judge_started
    images, labels = images[keep], labels[keep]
    real_u8 = memcore.to_uint8(images)
    base_f = base_net.features(images)
    per_class, hits, support_pool, generated = {}, {}, {}, {}
    all_probs = []
    with torch.no_grad():
        for c, name in zip(labels.unique().tolist(), names):
            idx = torch.nonzero(labels == c)[:, 0]
            idx = idx[torch.randperm(len(idx), generator=gen)]
            cond, rest = idx[0], idx[1:1 + args.per_class]
            slots = torch.randint(G.memory.num_slots, (args.per_class,), generator=gen)
            fake = G(cr=G.encode_cr(images[cond][None]), slot=slots)
            fake_u8 = memcore.to_uint8(fake)
            fake_f = features(fake_u8)
            real_f = features(real_u8[rest])
            pool = idx[-args.supports:]
            # With 50 vs 50 images FID is far above 0 even for real images: the same scores of
            # other held-out real images of the class (disjoint from `rest` and the supports)
            # are the floor a perfect generator would reach at this sample size.
            reference = idx[1 + args.per_class:max(0, len(idx) - args.supports)][:args.per_class]
            floor = (distribution_scores(real_u8[reference], real_u8[rest], args.extractor)
                     if len(reference) >= 2 else {"fid": None, "kid": None})
            hallucinated, reconstructed, probs = class_measures(
                G, images[idx], gen, args.hit_exemplars, args.hit_slots)
            all_probs.append(probs)
            hits[name] = {
                "hallucinated": float((judge.predict(hallucinated.flatten(0, 1)) == c)
                                      .double().mean()),
                "reconstructed": float((judge.predict(reconstructed) == c).double().mean()),
                "real": float((judge.predict(images[idx]) == c).double().mean())}
            slot_pair = sum(mean_pairwise_l1(h) for h in hallucinated) / len(hallucinated)
            same_class = mean_pairwise_l1(images[idx])
            per_class[name] = {
                **distribution_scores(fake_u8, real_u8[rest], args.extractor),
                "fid_real_reference": floor["fid"], "kid_real_reference": floor["kid"],
                "diversity_generated": mean_pairwise_distance(fake_f),
                "diversity_real": mean_pairwise_distance(real_f),
                "slot_pair_l1": slot_pair, "same_class_real_l1": same_class,
                "slot_pair_ratio": slot_pair / same_class,
                "reconstruction_l1": float((reconstructed - images[idx]).abs().mean()),
                "address": address_information(probs),
                "generated": len(fake), "real": len(rest), "real_reference": len(reference),
                "class_hit_images": {"hallucinated": hallucinated.shape[0] * hallucinated.shape[1],
                                     "reconstructed": len(idx), "real": len(idx)}}
            support_pool[c] = pool.tolist()
            generated[c] = []
            for s in pool:
                slots = torch.randperm(G.memory.num_slots, generator=gen)[:args.generated]
                generated[c].append(base_net.features(G(cr=G.encode_cr(images[s][None]),
                                                        slot=slots)))
    protonet = []
    for way in protonet_ways(args.way, len(names)):
        (plain, plain_ci), (aug, aug_ci) = protonet_accuracy(
            base_f, labels, support_pool, generated, args.episodes, args.queries, gen, way)
        protonet.append({"way": way, "shot": 1, "episodes": args.episodes,
                         "queries_per_class": args.queries,
                         "generated_per_support": args.generated,
                         "accuracy": plain, "ci95": plain_ci,
                         "accuracy_with_generated": aug, "ci95_with_generated": aug_ci})
    hit_means = {k: sum(v[k] for v in hits.values()) / len(hits)
                 for k in ("hallucinated", "reconstructed", "real")}
    result = {
        "step": state["step"], "extractor": described, "novel_classes": names,
        "class_hit": hits, "class_hit_mean": hit_means,
        "judge": {**judge.describe("judge only: a classifier over every class of the dataset "
                                   "(novel ones included), trained from the training split, used "
                                   "only to say which class an image shows; 'real' is its hit "
                                   "rate on held-out real images of the class"),
                  "seconds_both": round(judge_seconds, 1)},
        "slot_pair_ratio_mean": _mean_of(per_class, "slot_pair_ratio"),
        "address": address_information(torch.cat(all_probs)),
        "per_class": per_class,
        "fid_mean": _mean_of(per_class, "fid"), "kid_mean": _mean_of(per_class, "kid"),
        "fid_real_reference_mean": _mean_of(per_class, "fid_real_reference"),
        "kid_real_reference_mean": _mean_of(per_class, "kid_real_reference"),
        "protonet_features": base_net.describe("ProtoNet feature space: pooled features of a "
                                               "classifier trained on the run's base classes "
                                               "only (no novel image)"),
        "protonet": protonet,
        "protocol": f"class-hit: {args.hit_exemplars} exemplars per novel class x "
                    f"{args.hit_slots} slots, reconstructions and real images of all held-out "
                    f"images used, judged by the judge; slot-pair ratio: mean per-pixel L1 between "
                    f"images of one exemplar with different slots over that between two real "
                    f"images of the class; FID/KID: one conditioning image per novel class, "
                    f"{args.per_class} generated vs up to {args.per_class} other held-out real "
                    f"images of that class; reference: up to {args.per_class} further real images "
                    f"of the class vs the same ones; {'G' if args.no_ema else 'EMA G'}",
        "seconds": round(time.perf_counter() - started, 1)}
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent.parent
    target = run_dir / f"mfh-eval-step-{state['step']:07d}{'-no-ema' if args.no_ema else ''}.json"
    memcore.safewrite.write_text(target, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(summary_line(result))
    print(f"-> {target}")
    return 0


def summary_line(result: dict) -> str:
    hit, address = result["class_hit_mean"], result["address"]
    proto = " ".join(f"{p['way']}-way {p['accuracy']:.3f}±{p['ci95']:.3f} -> "
                     f"{p['accuracy_with_generated']:.3f}±{p['ci95_with_generated']:.3f}"
                     for p in result["protonet"])
    return (f"step {result['step']}: class-hit (judge only, trained on every class) hallucinated "
            f"{hit['hallucinated']:.3f} reconstructed {hit['reconstructed']:.3f} real "
            f"{hit['real']:.3f}; slot-pair/same-class L1 {result['slot_pair_ratio_mean']:.3f}; "
            f"address entropy {address['entropy_per_image']:.3f} of log n "
            f"{address['log_slots']:.3f}, I(image; slot) {address['mutual_information']:.3f}; "
            f"ProtoNet 1-shot (base-only features) {proto}")

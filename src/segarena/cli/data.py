"""`segarena datasets ...` and `segarena models ...`."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from ._common import (_print_json, _table, _options, _progress_bar)


# ---- datasets ---------------------------------------------------------------------------------------------
def cmd_datasets_list(a: argparse.Namespace) -> int:
    from ..data import DATASETS

    cards = [dataclasses.asdict(DATASETS.get(n).card) for n in DATASETS.names()]
    if a.json:
        _print_json(cards)
    else:
        print(_table([("name", "modality", "classes", "license")] +
                     [(c["name"], c["modality"], str(len(c["labels"])), c["license"]) for c in cards],
                     widths=(None, 48, None, 60)))
    return 0


def cmd_datasets_prepare(a: argparse.Namespace) -> int:
    from ..data.prepare import prepare
    from ..data.splits import load_or_create

    opts = _dataset_options(a)
    data = prepare(a.name, a.size, a.data_root, opts, progress=True)
    rec = load_or_create(a.name, data.ids, data.groups, data.index["sha256"], data.index["phash"], a.folds, a.seed,
                         duplicates=a.duplicates, split=a.split, meta=data.index["meta"])
    dups = rec["duplicates"]
    print(f"prepared {a.name}: {len(data)} cases at {a.size}x{a.size} in {data.folder}")
    print(f"split: {a.folds} folds of {rec['fold_sizes']} cases; {len(dups)} duplicate cluster(s) kept within one "
          f"fold ({sum(1 for d in dups if d['kind'] == 'exact')} exact, "
          f"{sum(1 for d in dups if d['kind'] == 'near')} near)"
          + (f"; {len(rec['removed'])} duplicate(s) removed" if rec.get("removed") else ""))
    return 0


def cmd_datasets_download(a: argparse.Namespace) -> int:
    from ..data import DATASETS, data_root
    from ..data.download import download_dataset

    card = DATASETS.get(a.name).card
    if card.download is None:
        where = card.how_to_get or f"get it from {card.url}"
        print(f"{card.title} cannot be downloaded automatically (registration or several archives): {where}. "
              f"Put it at {data_root(a.data_root) / (card.folder or a.name)}.")
        return 1
    folder = download_dataset(card, data_root(a.data_root))
    print(f"{card.title}: downloaded, checked and unpacked into {folder}\nlicense: {card.license}\n"
          f"cite: {card.citation}")
    return 0


def _dataset_options(a: argparse.Namespace) -> dict:
    """Adapter options from ``--option key=value`` plus ``--path`` (the dataset's own folder)."""
    opts = _options(a.option)
    if a.path:
        opts["path"] = a.path
    return opts


def cmd_datasets_export_nnunet(a: argparse.Namespace) -> int:
    from ..data.nnunet import export_nnunet

    opts = _dataset_options(a)
    folder = export_nnunet(a.name, a.out, root=a.data_root, options=opts, dataset_id=a.id, num_folds=a.folds,
                           seed=a.seed, duplicates=a.duplicates, limit=a.limit, progress=_progress_bar("export"))
    print(f"wrote nnU-Net raw dataset {folder} (imagesTr/, labelsTr/, dataset.json) and splits_final.json with "
          f"segarena's {a.folds} folds (seed {a.seed}); copy splits_final.json into "
          f"$nnUNet_preprocessed/{folder.name}/ after nnUNetv2_plan_and_preprocess")
    return 0


def cmd_datasets_check(a: argparse.Namespace) -> int:
    from ..data import check as check_mod

    opts = _dataset_options(a)
    report = check_mod.check_dataset(a.name, a.root, opts, progress=None if a.json else _progress_bar("check"))
    if a.json:
        _print_json(report)
    else:
        print(check_mod.format_report(report))
    return 0 if not report.get("problems") else 1


# ---- models -----------------------------------------------------------------------------------------------
def cmd_models_list(a: argparse.Namespace) -> int:
    from .._model_catalog import cards as catalog_cards  # card data: no torch, zoo, adapters or scipy import
    from .._model_catalog import patterns

    all_cards, source = catalog_cards()
    if source == "live":  # the zoo (and any plugin) was imported: say which plugins failed to load
        from ..models import PLUGIN_ERRORS

        for msg in PLUGIN_ERRORS:
            print(f"segarena: warning: {msg}", file=sys.stderr)
    cards = [c for c in all_cards if not a.family or c["family"] == a.family]
    if a.json:
        _print_json(cards)
    else:
        rows = [(c["name"], c["family"], f"{c['params_paper_m']:.0f}M" if c.get("params_paper_m") else "",
                 c.get("origin", "segarena"), c["title"]) for c in cards]
        print(_table([("name", "family", "params (paper)", "from", "title")] + rows))
        print("\nalso by name: " + "; ".join(f"{p} (e.g. {', '.join(ex)})" for p, ex in patterns()) +
              " — see docs/models/your-own-model.md")
    return 0


def cmd_models_info(a: argparse.Namespace) -> int:
    from ..models import model_info

    from ..progress import spinner

    what = f"building {a.name}" + (f" and counting FLOPs at {a.size}x{a.size}" if a.size else "")
    with spinner(what, enabled=not a.json):
        info = model_info(a.name, num_classes=a.classes, size=a.size or None, in_channels=a.in_channels)
    if a.json:
        _print_json(info)
    else:
        for k in ("name", "family", "title", "paper", "repo", "license", "params", "flops", "macs", "input_size",
                  "input_divisor", "fixed_size", "gradcam_layer", "notes"):
            if info.get(k) not in (None, ""):
                v = info[k]
                v = f"{v / 1e6:.2f}M" if k == "params" else f"{v / 1e9:.2f} G" if k in ("flops", "macs") else v
                print(f"{k:<14}{v}")
        for tag, w in info["pretrained"].items():
            print(f"{'pretrained':<14}{tag}: {w['source']} ({w['license']})")
    return 0

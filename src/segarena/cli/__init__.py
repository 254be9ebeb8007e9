"""The ``segarena`` command. Subcommands only parse arguments and call one library function each.

User errors (SegarenaError) print one line ``segarena: error: ...`` and exit with code 2, without a traceback.

Layout: this module holds the parser and ``main``; the subcommands live in ``data`` (datasets, models), ``runs``
(run, compare, studies, reports, cross-dataset evaluation, external methods, explanations) and ``deploy``
(predict, export, convert-weights); ``_common`` has the helpers they share.
"""
from __future__ import annotations

import argparse
import os
import sys

from .._errors import SegarenaError
from ._common import _log_command
from .data import (
    cmd_datasets_list, cmd_datasets_prepare, cmd_datasets_download, cmd_datasets_export_nnunet, cmd_datasets_check,
    cmd_models_list, cmd_models_info
)
from .deploy import cmd_convert_weights, cmd_export, cmd_predict
from .runs import (
    cmd_run, cmd_config_show, cmd_compare, cmd_report, cmd_study_plan, cmd_study_run, cmd_study_status, cmd_select,
    cmd_crossval, cmd_evaluate, cmd_add_method, cmd_demo, cmd_explain, cmd_zeroshot
)


# ---- parser -----------------------------------------------------------------------------------------------
def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="protocol preset (paper, cpu-demo, smoke) or YAML file of protocol fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set protocol.lr=5e-5 (repeatable)")
    p.add_argument("--results", default="results", help="results folder (default: ./results)")
    p.add_argument("--data-root", help="folder(s) holding the datasets, several separated by "
                                       f"{os.pathsep!r}, searched in order (default: $SEGARENA_DATA_ROOT, else the "
                                       "cache)")
    p.add_argument("--download", action="store_true",
                   help="download a public dataset that is not found (default: never download)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    """The options that resolve one run's spec: shared by `run` and `config show`, so both see the same spec."""
    p.add_argument("--model")
    p.add_argument("--dataset")
    p.add_argument("--fold", type=int)
    p.add_argument("--config", help="YAML file of a RunSpec (data/model/protocol)")
    _add_run_args(p)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    ap = argparse.ArgumentParser(prog="segarena", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--version", action="version", version=f"segarena {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("datasets", help="list, prepare and check datasets").add_subparsers(dest="sub", required=True)
    p = ds.add_parser("list", help="registered datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_datasets_list)
    p = ds.add_parser("prepare", help="decode a dataset once into the fast prepared cache and write its split")
    p.add_argument("name")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", "--raw", dest="data_root")
    p.add_argument("--path", help="folder of the dataset (user datasets, or a named dataset's own folder)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--download", action="store_true", help="download a public dataset that is not found")
    p.add_argument("--duplicates", choices=["group", "remove"], default="group")
    p.add_argument("--split", choices=["kfold", "official"], default="kfold")
    p.set_defaults(fn=cmd_datasets_prepare)
    p = ds.add_parser("download", help="fetch a public dataset (checksum, resumable) into the data root")
    p.add_argument("name")
    p.add_argument("--data-root", help="where to unpack it (default: $SEGARENA_DATA_ROOT, else the cache)")
    p.set_defaults(fn=cmd_datasets_download)
    p = ds.add_parser("export-nnunet", help="write a dataset as an nnU-Net v2 raw dataset + splits_final.json "
                                             "with segarena's folds")
    p.add_argument("name", help="dataset name (folder / nnunet for your own data)")
    p.add_argument("--out", required=True, help="folder that receives Dataset<ID>_<Name>/ (e.g. $nnUNet_raw)")
    p.add_argument("--id", type=int, default=500, help="nnU-Net dataset id 1..999 (default 500)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duplicates", choices=["group", "remove"], default="group")
    p.add_argument("--limit", type=int, help="only the first N cases (sorted by id)")
    p.add_argument("--data-root", "--raw", dest="data_root")
    p.add_argument("--path", help="folder of the dataset (user datasets, or a named dataset's own folder)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.set_defaults(fn=cmd_datasets_export_nnunet)
    p = ds.add_parser("check", help="report every problem of a raw dataset")
    p.add_argument("name")
    p.add_argument("--root", "--data-root", dest="root", help="data root(s), several separated by "
                                                               f"{os.pathsep!r}")
    p.add_argument("--path", help="folder of the dataset (user datasets, or a named dataset's own folder)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_datasets_check)

    ms = sub.add_parser("models", help="list models and show their cards").add_subparsers(dest="sub", required=True)
    p = ms.add_parser("list")
    p.add_argument("--family", choices=["medical", "general", "foundation", "test"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_models_list)
    p = ms.add_parser("info")
    p.add_argument("name")
    p.add_argument("--size", type=int, default=512, help="input size for FLOPs (0: skip)")
    p.add_argument("--classes", type=int, default=2, help="classes including background")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_models_info)

    p = sub.add_parser("run", help="train, select on validation, evaluate on test: one run")
    _add_spec_args(p)
    p.set_defaults(fn=cmd_run)

    cs = sub.add_parser("config", help="show the resolved spec of a run before starting it").add_subparsers(
        dest="sub", required=True)
    p = cs.add_parser("show", help="print the resolved spec as YAML and its run id (same options as `run`)")
    _add_spec_args(p)
    p.set_defaults(fn=cmd_config_show)

    p = sub.add_parser("compare", help="models x datasets x folds, one after another, then the report")
    p.add_argument("--models", required=True, help="comma-separated model names")
    p.add_argument("--datasets", required=True, help="comma-separated dataset names")
    p.add_argument("--folds", default="0", help="comma-separated fold indices (default 0)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--config", help="YAML file of a RunSpec used as the base")
    _add_run_args(p)
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("report", help="leaderboard + Markdown/HTML report of a results folder")
    p.add_argument("results_dir")
    p.add_argument("--out", help="output folder (default RESULTS_DIR/report)")
    p.set_defaults(fn=cmd_report)

    st = sub.add_parser("study", help="run a whole study from a YAML file; show its status").add_subparsers(
        dest="sub", required=True)
    p = st.add_parser("run", help="run (or resume) a study: LR search on validation, then k-fold CV")
    p.add_argument("file", help="study YAML, e.g. configs/studies/borst2026.yaml")
    p.add_argument("--scale", help="a named scale of the study file (e.g. smoke)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=1, help="local: worker processes (one GPU each when present)")
    p.add_argument("--address", help="ray: cluster address (default: start a local Ray instance)")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed run (default 1)")
    p.add_argument("--time-limit", type=float, help="seconds per run attempt before it counts as failed")
    p.add_argument("--results", default="results")
    p.add_argument("--data-root", help=f"data root(s), several separated by {os.pathsep!r}")
    p.add_argument("--download", action="store_true", help="download public datasets that are not found")
    p.add_argument("--allow-missing-data", action="store_true",
                   help="run the datasets that are present instead of refusing to start when some are missing")
    p.add_argument("--throughput", help="gpu_check.py JSON: measured throughputs for the plan's estimates")
    p.set_defaults(fn=cmd_study_run)
    p = st.add_parser("plan", help="preflight and cost of a study: every run, model, weight source and dataset "
                                   "checked, GPU-hours per phase (nothing trains)")
    p.add_argument("file", help="study YAML, e.g. configs/studies/borst2026.yaml")
    p.add_argument("--scale", help="a named scale of the study file (e.g. smoke)")
    p.add_argument("--data-root")
    p.add_argument("--throughput", help="gpu_check.py JSON: measured throughputs replace the estimates")
    p.add_argument("--json", action="store_true", help="the plan as JSON: runs (with problems) and gpu_hours")
    p.set_defaults(fn=cmd_study_plan)
    p = st.add_parser("status", help="done / running / failed / pending runs and an ETA")
    p.add_argument("results_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_study_status)

    p = sub.add_parser("explain", help="Grad-CAMs + energy share and deletion AUC for test cases of a run")
    p.add_argument("run_dir", help="a finished run: results/runs/<run_name>")
    p.add_argument("--cases", default="worst:50", help="worst:N, best:N, all, or comma-separated case ids")
    p.add_argument("--method", default="gradcam", help="gradcam, gradcam++ or hirescam")
    p.add_argument("--out", help="output folder (default RUN_DIR/xai)")
    p.add_argument("--data-root", help="folder holding the datasets, if not where the run found them")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.set_defaults(fn=cmd_explain)

    p = sub.add_parser("predict", help="label maps for new images with a trained run or an exported bundle")
    p.add_argument("run_dir", metavar="RUN_DIR", help="results/runs/<run_name> or a bundle folder")
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--output", required=True, help="folder for <stem>.png masks (binary: 0/255; more classes: "
                   "palette PNG whose pixel values are the class indices)")
    p.add_argument("--raw-labels", action="store_true",
                   help="also write labels/<stem>.png with the class indices 0..K-1 (uint8)")
    p.add_argument("--probabilities", nargs="?", const="png", choices=["png", "npy"],
                   help="also write foreground probabilities: png (uint8 0-255, default) or npy (float16)")
    p.add_argument("--overlays", action="store_true", help="also write overlays/<stem>.png")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("export", help="a self-describing bundle (safetensors + bundle.json), optionally ONNX")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run: results/runs/<run_name>")
    p.add_argument("--out", required=True, help="new or empty folder for the bundle")
    p.add_argument("--onnx", action="store_true", help="also model.onnx, checked against PyTorch (segarena[onnx])")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("select", help="recommend a model for your data: a budgeted successive-halving race")
    p.add_argument("--data", help="folder with images/ and masks/ (the `folder` dataset)")
    p.add_argument("--dataset", default="folder", help="dataset name (default: folder, with --data)")
    p.add_argument("--models", help="comma-separated candidates (default: unet-vgg16, nnunet-plain, segformer-b2, "
                                    "upernet-convnext-t: segarena.runner.select.DEFAULT_CANDIDATES)")
    p.add_argument("--budget", type=int, default=60, help="total training epochs over all candidates")
    p.add_argument("--eta", type=int, default=2, help="keep the best 1/eta at each rung")
    p.add_argument("--config", help="YAML file of a RunSpec used as the base")
    _add_run_args(p)
    p.set_defaults(fn=cmd_select)

    p = sub.add_parser("crossval", help="evaluate every trained run on the label-compatible datasets (OOD)")
    p.add_argument("results_dir")
    p.add_argument("--data-root", help="folder(s) holding the partner datasets, several separated by "
                                       f"{os.pathsep!r} (default: $SEGARENA_DATA_ROOT); never downloads")
    p.add_argument("--partner", action="append", default=[], metavar="NAME[=FOLDER]",
                   help="a partner in its own folder (cvc-clinicdb=/data/CVC-ClinicDB) or a user dataset "
                        "(folder=/data/mine or nnunet=/data/Dataset501_X, options after commas: "
                        "folder=/data/mine,name=mine,harmonized={polyp: [1]}); repeatable")
    p.add_argument("--limit", type=int, help="use only the first N cases of each partner dataset")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_crossval)

    p = sub.add_parser("evaluate", help="score mask files from any tool against references (overlap + boundary)")
    p.add_argument("--pred", required=True, help="folder of predicted masks (matched to references by stem)")
    p.add_argument("--ref", required=True, help="folder of reference masks")
    p.add_argument("--labels", help="class names, background first, e.g. background,polyp")
    p.add_argument("--spacing", help="pixel size SY,SX in mm for boundary metrics (default: pixels)")
    p.add_argument("--tau", type=float, default=2.0, help="NSD tolerance (mm with --spacing, else pixels)")
    p.add_argument("--mask-values", help="raw value -> class, e.g. 0:0,255:1 (0 stays background), or binary "
                                         "(> 127 is foreground) or labels (values are classes); default: the "
                                         "shared rule (label maps kept, 0/255 and JPEG masks -> 0/1)")
    p.add_argument("--out", help="write per-case records to this .parquet or .csv file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("add-method", help="score another tool's predicted masks for one fold; store them as a run")
    p.add_argument("results_dir", metavar="RESULTS", help="results folder (created if new)")
    p.add_argument("--name", required=True, help="the method's name in the report, e.g. nnunet-2d")
    p.add_argument("--dataset", required=True, help="registered dataset name (e.g. kvasir-seg, folder)")
    p.add_argument("--fold", type=int, required=True, help="the test fold the masks were predicted for")
    p.add_argument("--pred", required=True, help="folder of predicted masks, one per test case, named by case id")
    p.add_argument("--data-root", help="folder holding the datasets (default: SEGARENA_DATA_ROOT)")
    p.add_argument("--set", action="append", metavar="data.KEY=VALUE",
                   help="split settings of the runs to compare with, e.g. data.num_folds=5, data.options.path=...")
    p.set_defaults(fn=cmd_add_method)

    p = sub.add_parser("convert-weights", help="write a checkpoint's tensors to safetensors (the safe format)")
    p.add_argument("checkpoint", help="a .pth/.pt/.bin checkpoint")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--trust-file", action="store_true",
                   help="unpickle with plain torch.load: RUNS any code in the file; only for files you trust")
    p.set_defaults(fn=cmd_convert_weights)

    p = sub.add_parser("zeroshot", help="LiteMedSAM zero-shot with ORACLE boxes from the reference masks "
                                        "(an upper bound; reported apart, never ranked)")
    p.add_argument("--dataset", default="kvasir-seg")
    p.add_argument("--fold", type=int, default=0, help="test fold (the protocol's rotation)")
    p.add_argument("--out", default="results/zeroshot", help="output folder (kept apart from ranked results)")
    p.add_argument("--max-cases", type=int, help="score only the first N test cases")
    p.add_argument("--data-root", help="folder holding the datasets (default: $SEGARENA_DATA_ROOT, else the cache)")
    p.add_argument("--device", default=None)
    p.add_argument("--set", action="append", metavar="data.KEY=VALUE", help="split settings, e.g. data.limit=500")
    p.set_defaults(fn=cmd_zeroshot)

    p = sub.add_parser("demo", help="the README demo: LiteMedSAM vs U-Net vs SegFormer on Kvasir-SEG, CPU-sized")
    _add_run_args(p)
    p.set_defaults(fn=cmd_demo, results="results/demo")
    return ap


#: commands whose results folder records the command line
#: these build a report at their end, so they log themselves just before it (the report shows the command)
_SELF_LOGGING = {"compare", "study", "demo"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if getattr(args, "download", False):  # read by data.dataset_root, inherited by worker processes
        os.environ["SEGARENA_DOWNLOAD"] = "1"
    try:
        if getattr(args, "device", None):
            from ..protocol.precision import pick_device

            pick_device(args.device)
        rc = int(args.fn(args) or 0)
        if rc in (0, 1) and args.command not in _SELF_LOGGING:  # the command ran: record what produced results
            _log_command(args, argv)
        return rc
    except SegarenaError as exc:
        print(f"segarena: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("segarena: interrupted (finished runs are kept; rerun to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

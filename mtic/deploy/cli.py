"""`mtic export` and `mtic serve` (wired into mtic/cli.py by `add_commands`)."""
from __future__ import annotations

import argparse
from typing import Any

from mtic.deploy.settings import ServiceSettings


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mtic.deploy.artifact import is_export_dir
    from mtic.deploy.export import export_checkpoint, parity_summary
    from mtic.models.checkpoint_io import ArtifactError, existing_file

    existing_file(args.checkpoint)  # before anything else: a missing checkpoint is named as such
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ArtifactError(out, "exists and is not a directory; give a new export directory")
    if out.is_dir() and any(out.iterdir()):
        if not is_export_dir(out):
            raise ArtifactError(out, "exists, is not empty and is not an mtic export; give a new export directory")
        if not args.force:
            raise ArtifactError(out, "an export already exists here; pass --force to replace it")
    card = export_checkpoint(
        args.checkpoint, args.out, view=args.view, bundle=args.bundle, cache_dir=args.cache_dir, int8=args.int8,
        per_channel=args.per_channel, reduce_range=args.reduce_range, parity_limit=args.parity_limit or None,
    )
    print(parity_summary(card))
    files = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in card["files"].items())
    print(f"exported {card['name']} v{card['version']} ({card['intents']} intents, view {card['view']['kind']}; "
          f"{files}) to {args.out}\nserve it with: mtic serve {args.out}")
    return 0


MAX_PORT = 65535


def _serve_settings(args: argparse.Namespace) -> ServiceSettings:
    """The service settings of the command line; a value out of range is a ConfigError (one line), raised before
    the model is loaded or a port is bound."""
    import math

    from mtic.config_schema import ConfigError

    if not 0 <= args.port <= MAX_PORT:
        raise ConfigError(f"mtic serve: --port must be 0..{MAX_PORT} (0 = any free port), got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"mtic serve: --threads must be >= 1 (omit it for all cores), got {args.threads}")
    for flag, value in (("--batch-wait-ms", args.batch_wait_ms), ("--header-timeout", args.header_timeout),
                        ("--body-timeout", args.body_timeout), ("--keep-alive", args.keep_alive)):
        if not math.isfinite(value):
            raise ConfigError(f"mtic serve: {flag} must be a finite number of seconds, got {value}")
    try:
        return ServiceSettings(
            max_turns=args.max_turns, max_chars=args.max_chars, max_batch=args.max_batch,
            max_body_bytes=args.max_body_bytes, top_k=args.top_k, max_top_k=max(args.top_k, args.max_top_k),
            batching=args.batching, batch_wait_ms=args.batch_wait_ms, batch_max_sessions=args.batch_max_sessions,
            infer_batch=args.infer_batch, header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
            keep_alive_s=args.keep_alive, docs=args.docs,
        )
    except ValueError as err:  # e.g. "service setting max_turns must be >= 1": the flag is --max-turns
        raise ConfigError(f"mtic serve: {err}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from mtic.deploy.service import serve

    settings = _serve_settings(args)
    serve(args.model, settings, host=args.host, port=args.port, precision=args.precision, threads=args.threads,
          log_level=args.log_level)
    return 0


def add_commands(groups: Any) -> None:
    """Add the `export` and `serve` sub-commands to the `mtic` parser's sub-parsers."""
    from mtic.deploy.artifact import VIEW_KINDS
    export = groups.add_parser("export", help="HTC checkpoint -> ONNX (+int8) export directory with parity check")
    export.add_argument("checkpoint", help="an HTC .ckpt (its run's saved config gives the view and bundle)")
    export.add_argument("out", help="export directory to write")
    export.add_argument("--view", choices=list(VIEW_KINDS), default=None,
                        help="the model's input view (default: from the checkpoint's run config)")
    export.add_argument("--bundle", default=None, help="bundle for the parity check (default: the run's bundle)")
    export.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 model")
    export.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                        help="int8: per-channel weight scales (default on)")
    export.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                        help="int8: 7-bit weights, no u8s8 saturation on CPUs without VNNI (default on)")
    export.add_argument("--parity-limit", type=int, default=500, help="parity sessions (0 = all)")
    export.add_argument("--cache-dir", default=None, help="model cache (default $MTIC_CACHE or ~/.cache/mtic)")
    export.add_argument("--force", action="store_true", help="replace an existing export in the output directory")
    export.set_defaults(func=_cmd_export)

    d = ServiceSettings()
    serve = groups.add_parser("serve", help="HTTP intent service (FastAPI + uvicorn) for an export or a checkpoint")
    serve.add_argument("model", help="export directory (or an HTC .ckpt, which needs torch)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto", help="auto = int8 if exported")
    serve.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    serve.add_argument("--max-turns", type=int, default=d.max_turns, help="queries per session")
    serve.add_argument("--max-chars", type=int, default=d.max_chars, help="characters per query")
    serve.add_argument("--max-batch", type=int, default=d.max_batch, help="sessions per request")
    serve.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="request body size (413 above)")
    serve.add_argument("--top-k", type=int, default=d.top_k, help="alternatives returned by default")
    serve.add_argument("--max-top-k", type=int, default=d.max_top_k, help="largest top_k a request may ask for")
    serve.add_argument("--batching", action="store_true", help="micro-batch concurrent requests")
    serve.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms, help="micro-batching: gather window")
    serve.add_argument("--batch-max-sessions", type=int, default=d.batch_max_sessions, help="micro-batching: size")
    serve.add_argument("--infer-batch", type=int, default=d.infer_batch,
                       help="sessions per model call (bounds activation memory)")
    serve.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                       help="seconds for a client to send a complete request head (408 and closed after)")
    serve.add_argument("--body-timeout", type=float, default=d.body_timeout_s,
                       help="seconds for a client to send the whole body after the head (408 and closed after)")
    serve.add_argument("--keep-alive", type=float, default=d.keep_alive_s, help="idle keep-alive connection timeout")
    serve.add_argument("--docs", action="store_true", help="serve /docs, /redoc and /openapi.json (off by default)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_cmd_serve)

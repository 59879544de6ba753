"""Every subcommand, fed bad input, prints one line on stderr and exits 2 — never a traceback.

The table below is the contract: for each command (and each member of the ``eval``, ``analyze``
and ``experiment`` groups) it lists the bad inputs of the issue that apply to it — missing paths,
non-checkpoint folders, truncated or pickled weights, checkpoints of another version or config,
unknown solvers, temperature ≤ 0, top-p outside (0, 1], negative counts, impossible configs,
missing data folders, empty or non-UTF-8 text, SST-2 files with a wrong header. A command added to
``steerflow.cli.main.COMMANDS`` or a group's ``MEMBERS`` without a row here fails
:func:`test_every_command_has_bad_input_cases`.

Runs happen in this process through ``steerflow.cli.main.main``; two run as real subprocesses to
check the exit status and stderr a shell sees.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DATA = ["--data-dir", "{data}", "--cache-dir", "{cache}"]
SDATA = ["--data-dir", "{data}"]  # eval steering has no token cache
Q = ["--quiet"]

#: (id, argv with {zoo field} placeholders, expected exit code, text the one error line must hold)
#: — one case per line, long lines on purpose: the table reads better than wrapped rows
CASES: list[tuple[str, list[str], int, str]] = [
    # ---------------------------------------------------------------- generate
    ("generate/missing-checkpoint", ["generate", "{missing}", "--prompt", "x"], 2, "no such checkpoint"),
    ("generate/not-a-checkpoint", ["generate", "{not_checkpoint}", "--prompt", "x"], 2, "config.json: missing"),
    ("generate/truncated-weights", ["generate", "{truncated}", "--prompt", "x"], 2, "truncated safetensors"),
    ("generate/pickle-only", ["generate", "{pickle_only}", "--prompt", "x"], 2, "a pickle file"),
    ("generate/pickle-as-safetensors", ["generate", "{pickle_renamed}", "--prompt", "x"], 2, "unreadable"),
    ("generate/other-version", ["generate", "{other_version}", "--prompt", "x"], 2, "format version 99"),
    ("generate/other-config", ["generate", "{other_config}", "--prompt", "x"], 2, "do not match"),
    ("generate/no-tokenizer", ["generate", "{no_tokenizer}", "--prompt", "x"], 2, "no tokenizer.json"),
    ("generate/unknown-solver", ["generate", "{hybrid}", "--prompt", "x", "--solver", "rk9:4"], 2, "unknown solver method 'rk9'"),
    ("generate/unparsable-solver", ["generate", "{hybrid}", "--prompt", "x", "--solver", "dopri5:tight"], 2, "cannot parse solver"),
    ("generate/zero-steps", ["generate", "{hybrid}", "--prompt", "x", "--solver", "euler:0"], 2, "steps >= 1"),
    ("generate/temperature-0", ["generate", "{hybrid}", "--prompt", "x", "--temperature", "0"], 2, "--temperature must be > 0"),
    ("generate/temperature-negative", ["generate", "{hybrid}", "--prompt", "x", "--temperature", "-0.5"], 2, "--temperature"),
    ("generate/temperature-nan", ["generate", "{hybrid}", "--prompt", "x", "--temperature", "nan"], 2, "--temperature"),
    ("generate/top-p-0", ["generate", "{hybrid}", "--prompt", "x", "--top-p", "0"], 2, "--top-p must be in (0, 1]"),
    ("generate/top-p-above-1", ["generate", "{hybrid}", "--prompt", "x", "--top-p", "1.01"], 2, "--top-p"),
    ("generate/top-p-nan", ["generate", "{hybrid}", "--prompt", "x", "--top-p", "nan"], 2, "--top-p"),
    ("generate/top-k-0", ["generate", "{hybrid}", "--prompt", "x", "--top-k", "0"], 2, "--top-k"),
    ("generate/negative-tokens", ["generate", "{hybrid}", "--prompt", "x", "--max-new-tokens", "-1"], 2, "--max-new-tokens"),
    ("generate/zero-samples", ["generate", "{hybrid}", "--prompt", "x", "--samples", "0"], 2, "--samples"),
    ("generate/negative-seed", ["generate", "{hybrid}", "--prompt", "x", "--seed", "-1"], 2, "--seed"),
    ("generate/non-integer-count", ["generate", "{hybrid}", "--prompt", "x", "--samples", "2.5"], 2, "invalid int"),
    ("generate/nan-control", ["generate", "{hybrid}", "--prompt", "x", "--u", "nan"], 2, "--u"),
    ("generate/control-too-long", ["generate", "{hybrid}", "--prompt", "x", "--u", "1,2"], 2, "control_dim"),
    ("generate/control-on-discrete", ["generate", "{discrete}", "--prompt", "x", "--u", "1"], 2, "discrete"),
    ("generate/more-tokens-than-context", ["generate", "{hybrid}", "--prompt", "x", "--max-new-tokens", "32"], 2, "use at most 31"),
    ("generate/prompt-longer-than-context", ["generate", "{hybrid}", "--prompt", " ".join(["film"] * 40)], 2, "tokens"),
    ("generate/empty-prompt", ["generate", "{hybrid}", "--prompt", ""], 2, "empty"),
    ("generate/missing-prompts-file", ["generate", "{hybrid}", "--prompts-file", "{missing}"], 2, "does not exist"),
    ("generate/empty-prompts-file", ["generate", "{hybrid}", "--prompts-file", "{root}/empty.txt"], 2, "holds no prompts"),
    ("generate/non-utf8-prompts-file", ["generate", "{hybrid}", "--prompts-file", "{root}/latin1.txt"], 2, "not UTF-8"),
    ("generate/bad-jsonl-prompts-file", ["generate", "{hybrid}", "--prompts-file", "{root}/broken.jsonl"], 2, "line 2"),
    ("generate/zero-threads", ["generate", "{hybrid}", "--prompt", "x", "--threads", "0"], 2, "--threads"),
    ("generate/no-prompt", ["generate", "{hybrid}"], 2, "required"),
    ("generate/guidance-nan", ["generate", "{hybrid}", "--prompt", "x", "--guidance", "nan"], 2, "--guidance must be a finite number >= 0"),
    ("generate/guidance-negative", ["generate", "{hybrid}", "--prompt", "x", "--guidance", "-0.5"], 2, "--guidance must be a finite number >= 0"),
    ("generate/guidance-on-discrete", ["generate", "{discrete}", "--prompt", "x", "--guidance", "1"], 2, "needs a hybrid checkpoint"),
    ("generate/dexperts-other-tokenizer", ["generate", "{hybrid}", "--prompt", "x", "--dexperts", "{hybrid},{no_tokenizer}"], 2, "needs models with the same tokenizer"),
    ("generate/dexperts-one-expert", ["generate", "{hybrid}", "--prompt", "x", "--dexperts", "{hybrid}"], 2, "POS_CKPT,NEG_CKPT"),
    ("generate/alpha-without-dexperts", ["generate", "{hybrid}", "--prompt", "x", "--alpha", "2"], 2, "--dexperts"),
    # ---------------------------------------------------------------- convert hf / export
    ("convert hf/missing-source", ["convert", "hf", "{missing}", "--out", "{root}/cv"], 2, "no such folder"),
    ("convert hf/no-config", ["convert", "hf", "{not_checkpoint}", "--out", "{root}/cv"], 2, "config.json: missing"),
    ("convert hf/other-architecture", ["convert", "hf", "{hybrid}", "--out", "{root}/cv"], 2, "is not supported; steerflow converts GPT2LMHeadModel"),
    ("convert hf/bad-span", ["convert", "hf", "{not_checkpoint}", "--out", "{root}/cv", "--ode-span", "4-8"], 2, "expected START:END"),
    ("convert hf/unknown-field", ["convert", "hf", "{not_checkpoint}", "--out", "{root}/cv", "--field", "mlp"], 2, "invalid choice"),
    ("convert hf/out-is-a-file", ["convert", "hf", "{not_checkpoint}", "--out", "{root}/a_file"], 2, "is a file, not a folder"),
    ("convert hf/no-out", ["convert", "hf", "{not_checkpoint}"], 2, "required"),
    ("convert hf/zero-threads", ["convert", "hf", "{not_checkpoint}", "--out", "{root}/cv", "--threads", "0"], 2, "--threads"),
    ("convert/unknown-member", ["convert", "onnx", "{hybrid}"], 2, "invalid choice"),
    ("export/missing-checkpoint", ["export", "{missing}", "--to", "transformers", "--out", "{root}/ex"], 2, "no such checkpoint"),
    ("export/not-a-checkpoint", ["export", "{not_checkpoint}", "--to", "transformers", "--out", "{root}/ex"], 2, "config.json: missing"),
    ("export/truncated-weights", ["export", "{truncated}", "--to", "transformers", "--out", "{root}/ex"], 2, "truncated safetensors"),
    ("export/pickle-only", ["export", "{pickle_only}", "--to", "transformers", "--out", "{root}/ex"], 2, "a pickle file"),
    ("export/other-version", ["export", "{other_version}", "--to", "transformers", "--out", "{root}/ex"], 2, "format version 99"),
    ("export/unknown-layout", ["export", "{hybrid}", "--to", "onnx", "--out", "{root}/ex"], 2, "invalid choice"),
    ("export/out-is-a-file", ["export", "{hybrid}", "--to", "transformers", "--out", "{root}/a_file"], 2, "is a file, not a folder"),
    ("export/no-layout", ["export", "{hybrid}", "--out", "{root}/ex"], 2, "required"),
    # ---------------------------------------------------------------- serve (fails before any server starts)
    ("serve/missing-checkpoint", ["serve", "{missing}"], 2, "no such checkpoint"),
    ("serve/not-a-checkpoint", ["serve", "{not_checkpoint}"], 2, "config.json: missing"),
    ("serve/truncated-weights", ["serve", "{truncated}"], 2, "truncated safetensors"),
    ("serve/pickle-only", ["serve", "{pickle_only}"], 2, "a pickle file"),
    ("serve/discrete", ["serve", "{discrete}"], 2, "discrete baseline without a control u"),
    ("serve/no-tokenizer", ["serve", "{no_tokenizer}"], 2, "no tokenizer.json"),
    ("serve/port-0", ["serve", "{hybrid}", "--port", "0"], 2, "a port is in [1, 65535]"),
    ("serve/port-not-a-number", ["serve", "{hybrid}", "--port", "http"], 2, "expected a port number"),
    ("serve/zero-max-nfe", ["serve", "{hybrid}", "--max-nfe", "0"], 2, "--max-nfe"),
    ("serve/empty-host", ["serve", "{hybrid}", "--host", " "], 2, "--host is empty"),
    # ---------------------------------------------------------------- info
    ("info/missing-checkpoint", ["info", "{missing}"], 2, "missing"),
    ("info/not-a-checkpoint", ["info", "{not_checkpoint}"], 2, "not a steerflow checkpoint"),
    ("info/truncated-weights", ["info", "{truncated}"], 2, "truncated"),
    ("info/pickle-only", ["info", "{pickle_only}"], 2, "a pickle file"),
    ("info/other-version", ["info", "{other_version}"], 2, "format version 99"),
    ("info/other-config", ["info", "{other_config}"], 2, "do not match"),
    ("info/unknown-preset", ["info", "--config", "huge"], 2, "unknown config 'huge'"),
    # ---------------------------------------------------------------- train
    ("train/missing-data", ["train", "--config", "tiny", "--out", "{root}/t", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("train/incomplete-data", ["train", "--config", "tiny", "--out", "{root}/t", "--data-dir", "{not_checkpoint}", *Q], 2, "missing: wikitext-2/train.txt"),
    ("train/empty-text", ["train", "--config", "tiny", "--out", "{root}/t", "--data-dir", "{empty_text}", "--cache-dir", "{cache}", *Q], 2, "valid.txt is empty"),
    ("train/non-utf8-text", ["train", "--config", "tiny", "--out", "{root}/t", "--data-dir", "{non_utf8}", "--cache-dir", "{cache}", *Q], 2, "not valid UTF-8"),
    ("train/negative-steps", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--steps", "-5", *Q], 2, "steps must be >= 1"),
    ("train/unknown-config-key", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--set", "n_layers=4", *Q], 2, "unknown model override"),
    ("train/wrong-type", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--set", "n_layer=\"four\"", *Q], 2, "n_layer"),
    ("train/heads-do-not-divide-width", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--set", "n_head=5", *Q], 2, "must divide n_embd"),
    ("train/ode-span-outside-layers", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--set", "ode_span=[2,9]", *Q], 2, "ode_span"),
    ("train/non-positive-tolerance", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--set", 'eval_solver={"method":"dopri5","steps":null,"rtol":0}', *Q], 2, "rtol"),
    ("train/alpha-init-0", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--set", "alpha_init=0", *Q], 2, "alpha_init"),
    ("train/negative-lr", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--lr", "-1e-3", *Q], 2, "lr"),
    ("train/teacher-top-p-above-1", ["train", "--task", "distill", "--from", "{missing}", "--teacher", "guidance", "--teacher-top-p", "1.5", "--out", "{root}/t", *DATA, *Q], 2, "distill_top_p"),
    ("train/teacher-orthogonal-one-pair", ["train", "--task", "distill", "--from", "{missing}", "--teacher", "dexperts:a,b", "--teacher-orthogonal", "--out", "{root}/t", *DATA, *Q], 2, "two or more expert pairs"),
    ("train/negative-control-adapter", ["train", "--task", "distill", "--from", "{missing}", "--teacher", "guidance", "--control-adapter", "-4", "--out", "{root}/t", *DATA, *Q], 2, "control_adapter"),
    ("train/control-adapter-for-lm", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--control-adapter", "4", *Q], 2, "control_adapter"),
    ("train/unknown-tokenizer", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--tokenizer", "wordpiece", *Q], 2, "tokenizer"),
    ("train/from-truncated", ["train", "--task", "steer", "--from", "{truncated}", "--out", "{root}/t", *DATA, *Q], 2, "truncated"),
    ("train/from-missing", ["train", "--task", "steer", "--from", "{missing}", "--out", "{root}/t", *DATA, *Q], 2, "no such checkpoint"),
    ("train/from-pickle", ["train", "--task", "steer", "--from", "{pickle_only}", "--out", "{root}/t", *DATA, *Q], 2, "a pickle file"),
    ("train/steer-bad-sst2-header", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", "--data-dir", "{bad_sst2}", "--cache-dir", "{cache}", *Q], 2, "header"),
    ("train/steer-alpha-value-word", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", *DATA, "--steer-alpha-value", "half", *Q], 2, "expected auto, keep, init"),
    ("train/steer-alpha-value-zero", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", *DATA, "--steer-alpha-value", "0", *Q], 2, "positive"),
    ("train/steer-alpha-value-block-field", ["train", "--task", "steer", "--from", "{block_hybrid}", "--out", "{root}/t", *DATA, "--steer-alpha-value", "1", *Q], 2, "linear in its output layer"),
    ("train/steer-discriminative-one", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", *DATA, "--steer-discriminative", "1", *Q], 2, "steer_discriminative must be in [0, 1)"),
    ("train/steer-discriminative-word", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", *DATA, "--steer-discriminative", "lots", *Q], 2, "invalid float value"),
    ("train/field-max-norm-zero", ["train", "--config", "tiny", "--out", "{root}/t", *DATA, "--field-max-norm", "0", *Q], 2, "field_max_norm must be a finite number > 0"),
    ("train/field-max-norm-baseline", ["train", "--config", "tiny", "--model", "baseline", "--out", "{root}/t", *DATA, "--field-max-norm", "1", *Q], 2, "a baseline has none"),
    ("train/ode-consistency-negative", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", *DATA, "--ode-consistency", "-1", *Q], 2, "ode_consistency must be >= 0"),
    ("train/steer-anchor-negative", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", *DATA, "--steer-anchor", "-1", *Q], 2, "steer_anchor must be a finite number >= 0"),
    ("train/steer-anchor-lm-task", ["train", "--out", "{root}/t", *DATA, "--steer-anchor", "1", *Q], 2, "steer_anchor applies to task='steer' or 'distill' only"),
    ("train/train-final-norm-lm-task", ["train", "--out", "{root}/t", *DATA, "--train-final-norm", *Q], 2, "train_final_norm applies to task='steer' or 'distill' only"),
    ("train/control-gain-negative", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", *DATA, "--control-gain", "-3", *Q], 2, "control_gain must be a positive number"),
    ("train/control-gain-nan", ["train", "--task", "steer", "--from", "{hybrid}", "--out", "{root}/t", *DATA, "--control-gain", "nan", *Q], 2, "control_gain must be a positive number"),
    ("train/control-out-lm-task", ["train", "--out", "{root}/t", *DATA, "--control-out", *Q], 2, "control_out applies to task='steer' or 'distill' only"),
    ("train/out-is-a-file", ["train", "--config", "tiny", "--out", "{root}/a_file", *DATA, *Q], 2, "is a file, not a folder"),
    ("train/out-inside-a-file", ["train", "--config", "tiny", "--out", "{root}/a_file/run", *DATA, *Q], 2, "a_file is a file"),
    ("train/no-out", ["train", "--config", "tiny"], 2, "--out"),
    # ---------------------------------------------------------------- experiment
    ("experiment gradient-stability/missing-data", ["experiment", "gradient-stability", "--config", "tiny", "--out", "{root}/e", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("experiment gradient-stability/negative-steps", ["experiment", "gradient-stability", "--config", "tiny", "--out", "{root}/e", *DATA, "--steps", "-1", *Q], 2, "steps must be >= 1"),
    ("experiment gradient-stability/unknown-preset", ["experiment", "gradient-stability", "--config", "huge", "--out", "{root}/e", *DATA, *Q], 2, "neither a preset"),
    ("experiment gradient-stability/impossible-config", ["experiment", "gradient-stability", "--config", "tiny", "--out", "{root}/e", *DATA, "--set", "n_head=3", *Q], 2, "must divide"),
    ("experiment gradient-stability/out-is-a-file", ["experiment", "gradient-stability", "--config", "tiny", "--out", "{root}/a_file", *DATA, *Q], 2, "is a file, not a folder"),
    ("experiment additive-ablation/missing-checkpoint", ["experiment", "additive-ablation", "{missing}", "{root}/ab"], 2, "no such checkpoint"),
    ("experiment additive-ablation/not-a-checkpoint", ["experiment", "additive-ablation", "{not_checkpoint}", "{root}/ab"], 2, "config.json: missing"),
    ("experiment additive-ablation/truncated-weights", ["experiment", "additive-ablation", "{truncated}", "{root}/ab"], 2, "truncated"),
    ("experiment additive-ablation/discrete-checkpoint", ["experiment", "additive-ablation", "{discrete}", "{root}/ab"], 2, "concat"),
    ("experiment additive-ablation/no-tokenizer", ["experiment", "additive-ablation", "{no_tokenizer}", "{root}/ab"], 2, "no tokenizer.json"),
    ("experiment additive-ablation/out-is-a-file", ["experiment", "additive-ablation", "{hybrid}", "{root}/a_file"], 2, "is a file, not a folder"),
    ("experiment adaptive-depth/missing-checkpoint", ["experiment", "adaptive-depth", "{missing}", *DATA, *Q], 2, "no such checkpoint"),
    ("experiment adaptive-depth/not-a-checkpoint", ["experiment", "adaptive-depth", "{not_checkpoint}", *DATA, *Q], 2, "config.json: missing"),
    ("experiment adaptive-depth/truncated-weights", ["experiment", "adaptive-depth", "{truncated}", *DATA, *Q], 2, "truncated"),
    ("experiment adaptive-depth/discrete-checkpoint", ["experiment", "adaptive-depth", "{discrete}", *DATA, *Q], 2, "discrete"),
    ("experiment adaptive-depth/field-mixes-tokens", ["experiment", "adaptive-depth", "{block_hybrid}", *DATA, *Q], 2, "needs a position-wise field"),
    ("experiment adaptive-depth/steered-without-tokenizer", ["experiment", "adaptive-depth", "{hybrid}", "--steered", "{no_tokenizer}", *DATA, *Q], 2, "no tokenizer.json"),
    ("experiment adaptive-depth/missing-data", ["experiment", "adaptive-depth", "{hybrid}", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("experiment adaptive-depth/zero-tolerance", ["experiment", "adaptive-depth", "{hybrid}", *DATA, "--tolerances", "1e-3", "0", *Q], 2, "positive number"),
    ("experiment adaptive-depth/zero-grid", ["experiment", "adaptive-depth", "{hybrid}", *DATA, "--grid", "0", *Q], 2, "positive integer"),
    ("experiment adaptive-depth/nan-control", ["experiment", "adaptive-depth", "{hybrid}", *DATA, "--controls", "nan", *Q], 2, "finite numbers"),
    ("experiment adaptive-depth/out-is-a-file", ["experiment", "adaptive-depth", "{hybrid}", *DATA, "--out", "{root}/a_file", *Q], 2, "is a file, not a folder"),
    ("experiment disentangle/missing-data", ["experiment", "disentangle", "--scale", "tiny", "--out", "{root}/dis", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("experiment disentangle/unknown-attribute", ["experiment", "disentangle", "--scale", "tiny", "--out", "{root}/dis", *DATA, "--axes", "sentiment,colour", *Q], 2, "unknown attribute(s) ['colour']"),
    ("experiment disentangle/one-attribute-twice", ["experiment", "disentangle", "--scale", "tiny", "--out", "{root}/dis", *DATA, "--axes", "register,register", *Q], 2, "two distinct attributes"),
    ("experiment disentangle/three-attributes", ["experiment", "disentangle", "--scale", "tiny", "--out", "{root}/dis", *DATA, "--axes", "sentiment,register,sentiment", *Q], 2, "two distinct attributes"),
    ("experiment disentangle/unknown-scale", ["experiment", "disentangle", "--scale", "huge", "--out", "{root}/dis"], 2, "invalid choice"),
    ("experiment disentangle/zero-prompts", ["experiment", "disentangle", "--scale", "tiny", "--out", "{root}/dis", *DATA, "--prompts", "0", *Q], 2, "positive integer"),
    ("experiment disentangle/no-out", ["experiment", "disentangle", "--scale", "tiny", *DATA, *Q], 2, "--out"),
    ("experiment disentangle/out-is-a-file", ["experiment", "disentangle", "--scale", "tiny", "--out", "{root}/a_file", *DATA, *Q], 2, "is a file, not a folder"),
    ("experiment scale/unknown-config", ["experiment", "scale", "--configs", "small,huge", *DATA, "--out", "{root}/scale", *Q], 2, "unknown config(s) huge"),
    ("experiment scale/repeated-config", ["experiment", "scale", "--configs", "small,small", *DATA, "--out", "{root}/scale", *Q], 2, "more than once"),
    ("experiment scale/zero-tokens", ["experiment", "scale", "--tokens", "0", *DATA, "--out", "{root}/scale", *Q], 2, "--tokens must be a positive"),
    ("experiment scale/missing-data", ["experiment", "scale", "--data-dir", "{missing}", "--out", "{root}/scale", *Q], 2, "does not exist"),
    ("experiment fluency/unknown-candidate", ["experiment", "fluency", "--candidates", "small,huge", *DATA, "--out", "{root}/fl", *Q], 2, "unknown candidate(s) huge"),
    ("experiment fluency/repeated-candidate", ["experiment", "fluency", "--candidates", "small,small", *DATA, "--out", "{root}/fl", *Q], 2, "more than once"),
    ("experiment fluency/zero-minutes", ["experiment", "fluency", "--minutes", "0", *DATA, "--out", "{root}/fl", *Q], 2, "positive number"),
    ("experiment fluency/repeated-minutes", ["experiment", "fluency", "--minutes", "1", "1", *DATA, "--out", "{root}/fl", *Q], 2, "repeats a budget"),
    ("experiment fluency/missing-data", ["experiment", "fluency", "--data-dir", "{missing}", "--out", "{root}/fl", *Q], 2, "does not exist"),
    ("experiment/unknown-member", ["experiment", "grokking"], 2, "invalid choice"),
    # ---------------------------------------------------------------- eval steering
    ("eval steering/missing-checkpoint", ["eval", "steering", "{missing}", *SDATA, *Q], 2, "no such checkpoint"),
    ("eval steering/not-a-checkpoint", ["eval", "steering", "{not_checkpoint}", *SDATA, *Q], 2, "config.json: missing"),
    ("eval steering/truncated-weights", ["eval", "steering", "{truncated}", *SDATA, *Q], 2, "truncated"),
    ("eval steering/discrete-checkpoint", ["eval", "steering", "{discrete}", "--base", "{hybrid}", *SDATA, *Q], 2, "discrete"),
    ("eval steering/missing-data", ["eval", "steering", "{hybrid}", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("eval steering/temperature-0", ["eval", "steering", "{hybrid}", *SDATA, "--temperature", "0", *Q], 2, "--temperature"),
    ("eval steering/top-p-above-1", ["eval", "steering", "{hybrid}", *SDATA, "--top-p", "1.5", *Q], 2, "--top-p"),
    ("eval steering/negative-samples", ["eval", "steering", "{hybrid}", *SDATA, "--samples", "-1", *Q], 2, "--samples"),
    ("eval steering/zero-prompts", ["eval", "steering", "{hybrid}", *SDATA, "--prompts", "0", *Q], 2, "--prompts"),
    ("eval steering/bad-sst2-header", ["eval", "steering", "{hybrid}", "--base", "{hybrid}", "--data-dir", "{bad_sst2}", "--judge-cache", "{root}/judge", *Q], 2, "header"),
    ("eval steering/out-is-a-file", ["eval", "steering", "{hybrid}", *SDATA, "--out", "{root}/a_file", *Q], 2, "is a file, not a folder"),
    ("eval steering/negative-guidance-gamma", ["eval", "steering", "{hybrid}", *SDATA, "--guidance-gammas=1,-2", *Q], 2, "--guidance-gammas must be finite numbers >= 0"),
    ("eval steering/nan-guidance-gamma", ["eval", "steering", "{hybrid}", *SDATA, "--guidance-gammas", "nan", *Q], 2, "--guidance-gammas"),
    ("eval steering/negative-dexperts-alpha", ["eval", "steering", "{hybrid}", *SDATA, "--dexperts-alphas=-1", *Q], 2, "--dexperts-alphas must be finite numbers >= 0"),
    ("eval steering/nan-dexperts-alpha", ["eval", "steering", "{hybrid}", *SDATA, "--dexperts-alphas", "1,nan", *Q], 2, "--dexperts-alphas"),
    ("eval steering/missing-dexperts-checkpoint", ["eval", "steering", "{hybrid}", *SDATA, "--dexperts", "{missing},{discrete}", *Q], 2, "no such checkpoint"),
    ("eval steering/one-dexperts-checkpoint", ["eval", "steering", "{hybrid}", *SDATA, "--dexperts", "{discrete}", *Q], 2, "two expert checkpoints"),
    ("eval steering/dexperts-other-tokenizer", ["eval", "steering", "{hybrid}", *SDATA, "--dexperts", "{no_tokenizer},{discrete}", *Q], 2, "different tokenizers"),
    ("eval steering/guidance-on-discrete-checkpoint", ["eval", "steering", "{discrete}", "--base", "{hybrid}", *SDATA, "--guidance-gammas", "2", *Q], 2, "guidance contrasts it at ±u; this one is discrete"),
    ("eval steering/missing-scorer", ["eval", "steering", "{hybrid}", *SDATA, "--scorer", "{missing}", *Q], 2, "no such checkpoint"),
    ("eval steering/scorer-is-the-generator", ["eval", "steering", "{hybrid}", *SDATA, "--scorer", "{hybrid}", *Q], 2, "is the steered model"),
    ("eval steering/hybrid-scorer", ["eval", "steering", "{hybrid}", *SDATA, "--scorer", "{block_hybrid}", *Q], 2, "give an independently trained discrete LM"),
    ("eval steering/missing-prompts-file", ["eval", "steering", "{hybrid}", *SDATA, "--prompts-file", "{missing}", *Q], 2, "does not exist"),
    ("eval steering/empty-prompts-file", ["eval", "steering", "{hybrid}", *SDATA, "--prompts-file", "{root}/empty.txt", *Q], 2, "holds no prompts"),
    ("eval steering/bad-jsonl-prompts-file", ["eval", "steering", "{hybrid}", *SDATA, "--prompts-file", "{root}/broken.jsonl", *Q], 2, "line 2"),
    ("eval steering/prompts-file-without-prompt", ["eval", "steering", "{hybrid}", *SDATA, "--prompts-file", "{root}/no_prompt.jsonl", *Q], 2, 'needs a string "prompt" or "text" field'),
    ("eval steering/zero-caa-sentences", ["eval", "steering", "{hybrid}", *SDATA, "--caa-sentences", "0", *Q], 2, "--caa-sentences"),
    ("eval steering/unknown-actadd-vector", ["eval", "steering", "{hybrid}", *SDATA, "--actadd-vector", "words", *Q], 2, "invalid choice"),
    # ---------------------------------------------------------------- eval invariance
    ("eval invariance/missing-checkpoint", ["eval", "invariance", "{missing}", *DATA, *Q], 2, "no such checkpoint"),
    ("eval invariance/not-a-checkpoint", ["eval", "invariance", "{not_checkpoint}", *DATA, *Q], 2, "config.json: missing"),
    ("eval invariance/truncated-weights", ["eval", "invariance", "{truncated}", *DATA, *Q], 2, "truncated"),
    ("eval invariance/discrete-checkpoint", ["eval", "invariance", "{discrete}", *DATA, *Q], 2, "discrete"),
    ("eval invariance/missing-data", ["eval", "invariance", "{hybrid}", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("eval invariance/empty-text", ["eval", "invariance", "{hybrid}", "--data-dir", "{empty_text}", "--cache-dir", "{cache}", *Q], 2, "is empty"),
    ("eval invariance/non-utf8-text", ["eval", "invariance", "{hybrid}", "--data-dir", "{non_utf8}", "--cache-dir", "{cache}", *Q], 2, "UTF-8"),
    ("eval invariance/unknown-solver", ["eval", "invariance", "{hybrid}", *DATA, "--solver", "leapfrog:4", *Q], 2, "unknown solver method"),
    ("eval invariance/negative-batches", ["eval", "invariance", "{hybrid}", *DATA, "--batches", "-2", *Q], 2, "positive integer"),
    ("eval invariance/non-positive-tolerance", ["eval", "invariance", "{hybrid}", *DATA, "--tolerances", "0", *Q], 2, "positive number"),
    ("eval invariance/out-is-a-file", ["eval", "invariance", "{hybrid}", *DATA, "--out", "{root}/a_file", *Q], 2, "is a file, not a folder"),
    # ---------------------------------------------------------------- eval probe
    ("eval probe/missing-checkpoint", ["eval", "probe", "{missing}", *DATA, *Q], 2, "no such checkpoint"),
    ("eval probe/not-a-checkpoint", ["eval", "probe", "{not_checkpoint}", *DATA, *Q], 2, "config.json: missing"),
    ("eval probe/truncated-weights", ["eval", "probe", "{truncated}", *DATA, *Q], 2, "truncated"),
    ("eval probe/discrete-checkpoint", ["eval", "probe", "{discrete}", *DATA, *Q], 2, "discrete"),
    ("eval probe/missing-data", ["eval", "probe", "{hybrid}", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("eval probe/bad-sst2-header", ["eval", "probe", "{hybrid}", "--data-dir", "{bad_sst2}", "--cache-dir", "{cache}", *Q], 2, "header"),
    ("eval probe/fixed-step-method", ["eval", "probe", "{hybrid}", *DATA, "--methods", "euler", *Q], 2, "adaptive"),
    ("eval probe/negative-rtol", ["eval", "probe", "{hybrid}", *DATA, "--rtol=-1e-3", *Q], 2, "positive number"),
    ("eval probe/negative-examples", ["eval", "probe", "{hybrid}", *DATA, "--examples", "-1", *Q], 2, "positive integer"),
    ("eval probe/out-is-a-file", ["eval", "probe", "{hybrid}", *DATA, "--out", "{root}/a_file", *Q], 2, "is a file, not a folder"),
    ("eval/unknown-member", ["eval", "vibes", "{hybrid}"], 2, "invalid choice"),
    # ---------------------------------------------------------------- analyze flow
    ("analyze flow/missing-checkpoint", ["analyze", "flow", "{missing}", *DATA, *Q], 2, "no such checkpoint"),
    ("analyze flow/not-a-checkpoint", ["analyze", "flow", "{not_checkpoint}", *DATA, *Q], 2, "config.json: missing"),
    ("analyze flow/truncated-weights", ["analyze", "flow", "{truncated}", *DATA, *Q], 2, "truncated"),
    ("analyze flow/discrete-checkpoint", ["analyze", "flow", "{discrete}", *DATA, *Q], 2, "discrete"),
    ("analyze flow/missing-data", ["analyze", "flow", "{hybrid}", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("analyze flow/negative-batch-size", ["analyze", "flow", "{hybrid}", *DATA, "--batch-size", "-1", *Q], 2, "batch_size"),
    ("analyze flow/unknown-method", ["analyze", "flow", "{hybrid}", *DATA, "--methods", "euler,leapfrog", *Q], 2, "unknown fixed-step method"),
    ("analyze flow/negative-steps", ["analyze", "flow", "{hybrid}", *DATA, "--steps", "1,-4", *Q], 2, "step counts must be positive"),
    ("analyze flow/out-is-a-file", ["analyze", "flow", "{hybrid}", *DATA, "--out", "{root}/a_file", *Q], 2, "is a file, not a folder"),
    ("analyze flow/hf-not-a-model", ["analyze", "flow", "--hf", "{not_checkpoint}", *Q], 2, "no config.json"),
    ("analyze flow/hf-and-checkpoint", ["analyze", "flow", "{hybrid}", "--hf", "{hybrid}", *Q], 2, "not allowed with argument checkpoint"),
    ("analyze flow/hf-with-hybrid-flag", ["analyze", "flow", "--hf", "{not_checkpoint}", "--controls", "1", *Q], 2, "--controls applies to hybrid checkpoints"),
    ("analyze/unknown-member", ["analyze", "entropy", "{hybrid}"], 2, "invalid choice"),
    # ---------------------------------------------------------------- bench
    ("bench/negative-batch-size", ["bench", "--quick", "--batch-size", "-1"], 2, "positive integer"),
    ("bench/zero-reps", ["bench", "--quick", "--reps", "0"], 2, "positive integer"),
    ("bench/unknown-benchmark", ["bench", "--quick", "--only", "vibes"], 2, "unknown benchmark"),
    ("bench/unknown-device", ["bench", "--quick", "--device", "abacus"], 2, "--device"),
    ("bench/unknown-preset", ["bench", "--config", "huge"], 2, "invalid choice"),
    ("bench/peers-and-only", ["bench", "--quick", "--peers", "--only", "latency"], 2, "--peers is --only"),
    # ---------------------------------------------------------------- demo / reproduce
    ("demo/missing-data", ["demo", "--config", "tiny", "--out", "{root}/d", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("demo/incomplete-data", ["demo", "--config", "tiny", "--out", "{root}/d", "--data-dir", "{data}", *Q], 2, "gpt2-tokenizer/encoder.json"),
    ("demo/zero-threads", ["demo", "--config", "tiny", "--out", "{root}/d", "--threads", "0", *Q], 2, "--threads"),
    ("demo/unknown-scale", ["demo", "--config", "huge"], 2, "invalid choice"),
    ("demo/out-is-a-file", ["demo", "--config", "tiny", "--out", "{root}/a_file", *Q], 2, "is a file, not a folder"),
    ("reproduce/missing-data", ["reproduce", "--scale", "tiny", "--out", "{root}/r", "--data-dir", "{missing}", *Q], 2, "does not exist"),
    ("reproduce/unknown-scale", ["reproduce", "--scale", "galactic"], 2, "invalid choice"),
    ("reproduce/out-is-a-file", ["reproduce", "--scale", "tiny", "--out", "{root}/a_file", *Q], 2, "is a file, not a folder"),
    # ---------------------------------------------------------------- the top level
    ("steerflow/unknown-command", ["fly"], 2, "invalid choice"),
]


def _fill(argv: list[str], zoo) -> list[str]:
    """Replace ``{field}`` by the zoo's path of that name (other braces, e.g. JSON, stay)."""
    fields = {name: str(getattr(zoo, name)) for name in zoo.__dataclass_fields__}
    return [re.sub(r"\{(\w+)\}", lambda m: fields.get(m.group(1), m.group(0)), a) for a in argv]


@pytest.fixture(scope="module")
def input_files(zoo) -> None:
    """Prompt files for the generate and eval steering cases (empty, Latin-1 encoded, broken JSON
    lines, a line without a prompt) and a plain file where an output folder is expected."""
    (zoo.root / "a_file").write_text("not a folder\n")
    (zoo.root / "empty.txt").write_text("\n  \n")
    (zoo.root / "latin1.txt").write_bytes("un film caf\xe9\n".encode("latin-1"))
    (zoo.root / "broken.jsonl").write_text('{"prompt": "The film"}\n{"prompt": \n')
    (zoo.root / "no_prompt.jsonl").write_text('{"prompt": "The film"}\n{"id": 2}\n')


@pytest.mark.parametrize("name, argv, code, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_code(zoo, input_files, cli, one_line_error, single_thread,
                                             name, argv, code, needle):
    result = cli(_fill(argv, zoo))
    one_line_error(result, code, needle)
    assert not zoo.marker.exists()  # no pickle was ever unpickled along the way


def _command_paths(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every leaf command of the parser: ``generate``, ``eval steering``, ..."""
    paths = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                leaves = _command_paths(sub, f"{prefix}{name} ")
                paths |= leaves or {f"{prefix}{name}"}
    return paths


def test_every_command_has_bad_input_cases():
    """A new subcommand or group member must come with rows in :data:`CASES`."""
    from steerflow.cli.main import build_parser

    commands = _command_paths(build_parser())
    covered = {name.split("/")[0] for name, *_ in CASES}
    assert commands, "no subcommands found"
    assert commands <= covered, f"commands without bad-input cases: {sorted(commands - covered)}"
    for command in commands:  # and each case runs the command it is filed under
        for name, argv, *_ in CASES:
            if name.split("/")[0] == command:
                assert " ".join(argv[: len(command.split())]) == command, name


def _subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    env.pop("STEERFLOW_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "steerflow", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_real_process_exit_status_and_stderr(zoo, tmp_path):
    """What a shell sees: status 2, the error on stderr, empty stdout — for a truncated checkpoint
    (our one-line error) and an unknown flag (argparse's usage line and error line)."""
    for args, needle in (
        (["generate", str(zoo.truncated), "--prompt", "The film", "--json"], "truncated"),
        (["info", "--config", "tiny", "--json", "--model", "baseline", "--bogus"], "unrecognized"),
    ):
        proc = _subprocess(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2 and needle in proc.stderr  # argparse: usage + error


def test_unexpected_exceptions_are_one_line_without_traceback(zoo, cli, monkeypatch):
    """A bug (an exception that is no steerflow error) still gives one line and exit 1; the
    traceback only with STEERFLOW_DEBUG=1."""
    from steerflow.model import gpt

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(gpt.SteerFlowGPT, "generate", broken)
    monkeypatch.delenv("STEERFLOW_DEBUG", raising=False)
    result = cli(["generate", zoo.hybrid, "--prompt", "The film"])
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err_lines == ["steerflow: internal error: ZeroDivisionError: simulated bug "
                                "(set STEERFLOW_DEBUG=1 for the traceback)"]
    monkeypatch.setenv("STEERFLOW_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli(["generate", zoo.hybrid, "--prompt", "The film"])


def test_os_errors_are_one_line_naming_the_path(cli, monkeypatch):
    """An OSError that escapes a command (a full disk while a figure is saved, a path that
    vanished) is the environment, not a bug: one line with the path and the cause, exit 2."""
    import errno

    from steerflow.cli import info

    def disk_full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/fig1.png")

    monkeypatch.setattr(info, "run", disk_full)
    result = cli(["info", "--config", "tiny"])
    assert result.code == 2 and result.out == ""
    assert result.err_lines == ["steerflow: error: /runs/x/fig1.png: No space left on device"]


def test_json_flag_prints_nothing_on_stdout_when_the_command_fails(zoo, cli):
    """``--json`` promises exactly one JSON object on success; on failure stdout stays empty, so a
    script reading it never parses half a result."""
    for argv in (["info", zoo.truncated, "--json"],
                 ["generate", zoo.other_config, "--prompt", "x", "--json"],
                 ["eval", "invariance", zoo.truncated, "--json", "--quiet"]):
        result = cli(argv)
        assert result.code == 2 and result.out == "", argv
    ok = cli(["info", zoo.hybrid, "--json"])
    assert ok.code == 0 and json.loads(ok.out)["params"] > 0

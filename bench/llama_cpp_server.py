"""``python bench/llama_cpp_server.py ARGS``: llama-cpp-python's OpenAI-compatible server (``python -m
llama_cpp.server ARGS``) with llama.cpp's extra CPU buffer types off (``use_extra_bufts = False``).

On the Xeon machine kind (a VM that shows AMX in its CPU flags), a wheel built with the default
native flags stops with SIGILL on the first request whose logits are all kept (the server keeps them,
``logits_all``, so that it can return log-probabilities) while those buffers are in use; the plain
CPU buffers answer the same requests. Used by ``tests/test_served.py`` and ``bench/served_llm.py``.
"""

from __future__ import annotations

import runpy

import llama_cpp.llama_cpp as low

_default = low.llama_model_default_params


def _params():  # type: ignore[no-untyped-def]
    params = _default()
    params.use_extra_bufts = False
    return params


low.llama_model_default_params = _params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)

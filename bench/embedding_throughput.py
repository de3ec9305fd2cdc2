"""Embedding throughput of the whole pipeline (image file in storage -> stored descriptor) beside the model's own
batched forward pass, measured in the same run, and where the time goes.

    .venv/bin/python bench/embedding_throughput.py [--model DIR] [--limit N]
    nice -n 19 .venv/bin/python bench/embedding_throughput.py --prepare   # import the catalogue once, niced
    .venv/bin/python bench/embedding_throughput.py --reuse [--model DIR]  # then time only the embedding
    .venv/bin/python bench/embedding_throughput.py --reuse --reembed [--model DIR]  # as a re-embedding
    .venv/bin/python bench/embedding_throughput.py --reuse --reembed --rounds 5     # and the median of 5 rounds
    .venv/bin/python bench/embedding_throughput.py --reuse --reembed --rounds 4 --copies 4  # rounds 4x as long

Runs on its own data directory (var/bench) and Redis port, so it never touches the platform's data. For the
model (the untrained Lite0 by default, or a trained model directory with --model):
1. limit: the model's batched forward pass on images decoded beforehand (`Embedder.embed_batch`, batches of
   32, float32 inputs), after a warm-up, before and after the pipeline (the mean), in two layouts: in this
   process on every core, and (when the worker's pool has several processes) as that many processes side by
   side, each on its share of the cores. The limit is the faster of the two;
2. parts: single-threaded decode through the storage API (to the uint8 pixels the worker hands the model), and
   the database write of a batch, per image; and the worker's decode + forward loop alone (`iter_embedded`
   through the storage, no database or Celery), before and after the pipeline: what the pipeline reaches at
   most with this decoder on this machine (not a limit: the ratio stays the one to the forward pass);
3. pipeline: imports the sample catalogue with no worker running (the tasks wait in Redis), then starts one
   real Celery worker (as `make run` does) and times it until every descriptor is stored: the steady-state
   rate (first batch stored -> last), its ratio to the limit, and the worker's peak resident memory (main
   process plus its pool children, sampled every 0.2 s). With several pool processes, also the rate while
   every one of them had work (until the first ran out): the sample is a dozen tasks, so its last one, run
   with a process idle, weighs far more in it than in a re-embedding of a whole shop.
With --reembed the images are embedded as `update_db` re-embeds them: the measured version is not active (a
placeholder version with no descriptors is), so its rows are written without vector indexes, which are built
on all of them when the job completes, before the switch; the bench then also times the job from the worker's
start until the version is active (the index build included).
On a machine shared with other jobs wall-clock rates swing from one minute to the next, so the script also
prints CPU time per image (all threads) of the forward pass and of the worker: their ratio is what the
pipeline would reach on a machine of its own (the database server's share of the writes not counted).
A sample re-embedding lasts about 10 s, and on such a machine one round's ratio swings by 15 points (63-80 % for
the same code, docs/RESULTS.md session 16): `--rounds N` re-embeds it N times, each round beside the limit
measured just before and after it, and prints every round and the median, the figure to quote. `--copies N`
makes each round N times as long: every catalogue item is embedded N times (N - 1 extra Item rows per item, on
the same stored file, marked by their `original_name`; removed again by a run with fewer copies), so that a
round lasts about a minute, the minute-to-minute swings of a shared machine average out inside it, and the last
task's tail (one pool process idle) weighs as little as in a shop's re-embedding.
"""
import argparse
import datetime
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FASHIONSITE_DATA_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6391/0")  # its own port
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fashionsite.settings")
# automatic tagging is a second pass after embedding (recommender.services.tagging): not part of this figure
os.environ["FASHIONSITE_AUTO_TAGGING"] = "0"

import psutil  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fashionsite import launcher  # noqa: E402
from fashionsite.paths import sample_catalogue_dir  # noqa: E402


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def tree_cpu(process: psutil.Process) -> float:
    """CPU seconds (user + system, all threads) of a process and its children so far."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def postgres_cpu(data_dir: Path) -> float:
    """CPU seconds of the embedded Postgres server so far: the postmaster, its live backends, and the backends that
    have exited (reaped by the postmaster: its children's times). 0 when the server is elsewhere (DATABASE_URL)."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if os.environ.get("DATABASE_URL") or not pid_file.exists():
        return 0.0
    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    times = postmaster.cpu_times()
    return times.children_user + times.children_system + tree_cpu(postmaster)


TASK_DONE = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/(\S+)\] Task "
                       r"recommender\.tasks\.embed_descriptors\[[^]]+\] succeeded in ([0-9.]+)s")


def every_process_busy(log_text: str, samples: list[tuple[float, int]]) -> tuple[float, int] | None:
    """The part of the steady state in which every pool process had work: from the first rows stored until the
    first pool process finished its last task (its end read from the worker's log), as (seconds, images stored
    meanwhile) from the bench's own count of stored rows (`samples`: wall-clock time, rows done). After that the
    last tasks run with a process idle, a tail of up to one task that a sample of a dozen tasks makes a sizeable
    share of and a long re-embedding (100,000 images: ~780 tasks) a negligible one. None with a single process."""
    last_done: dict[str, float] = {}
    for stamp, process, _seconds in TASK_DONE.findall(log_text):
        at = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the worker logs local time
        last_done[process] = max(at, last_done.get(process, at))
    if len(last_done) < 2:
        return None
    ends_at = min(last_done.values())
    inside = [(at, done) for at, done in samples if done > 0 and at <= ends_at]
    if len(inside) < 2:
        return None
    (first_at, first_done), (last_at, last_done_rows) = inside[0], inside[-1]
    return last_at - first_at, last_done_rows - first_done


def measure_limit(embedder, arrays, batch_size: int = 32, repeats: int = 3) -> tuple[float, float]:
    """The model's batched forward pass alone: images per second (best of `repeats` passes), and CPU
    milliseconds per image (all threads; on a shared machine the steadier figure)."""
    import numpy as np

    batch = np.stack(arrays[:batch_size])
    embedder.embed_batch(batch)  # warm-up (graph tracing)
    best, cpu = 0.0, []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, len(arrays), batch_size):
            embedder.embed_batch(np.stack(arrays[start:start + batch_size]))
        best = max(best, len(arrays) / (time.perf_counter() - started))
        cpu.append((time.process_time() - cpu_started) / len(arrays) * 1000)
    return best, min(cpu)


def _forward_in_child(spec, cache_dir, arrays_path, intra_op, batch_size, repeats, barrier, results):
    """One process of measure_limit_in_processes: the model on `intra_op` threads, timed after a barrier."""
    import numpy as np

    from ml.embedding import load_embedder, set_tf_threads

    set_tf_threads(intra_op, 1)
    embedder = load_embedder(spec, cache_dir)
    arrays = np.load(arrays_path)
    embedder.embed_batch(arrays[:batch_size])  # warm-up (graph tracing)
    for _ in range(repeats):
        barrier.wait()  # every process starts each pass together: the passes overlap fully
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, len(arrays), batch_size):
            embedder.embed_batch(arrays[start:start + batch_size])
        results.put((time.perf_counter() - started, time.process_time() - cpu_started))


def measure_limit_in_processes(spec, cache_dir, arrays, processes: int, batch_size: int = 32,
                               repeats: int = 3) -> tuple[float, float]:
    """The model's batched forward pass in the layout of the worker's pool: `processes` processes side by side,
    each TensorFlow on cores // processes threads, each running every array. Images per second for them all
    (best of `repeats` passes) and CPU milliseconds per image. One process on every core loses time to the
    threads of an operation waiting for each other; processes of their own do not, so this can be the higher
    of the two limits."""
    import multiprocessing
    import tempfile

    import numpy as np

    from ml.cores import available_cores

    context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    intra_op = max(1, available_cores() // processes)
    with tempfile.TemporaryDirectory() as folder:
        arrays_path = Path(folder) / "arrays.npy"
        np.save(arrays_path, np.stack(arrays))
        barrier, results = context.Barrier(processes), context.Queue()
        children = [context.Process(target=_forward_in_child, args=(
            spec, str(cache_dir), str(arrays_path), intra_op, batch_size, repeats, barrier, results))
            for _ in range(processes)]
        for child in children:
            child.start()
        passes = [[results.get(timeout=600) for _ in children] for _ in range(repeats)]
        for child in children:
            child.join()
    best = max(processes * len(arrays) / max(wall for wall, _ in done) for done in passes)
    cpu = min(sum(cpu for _, cpu in done) / (processes * len(arrays)) * 1000 for done in passes)
    return best, cpu


def measure_decode_and_forward(embedder, fields, repeats: int = 2) -> tuple[float, float]:
    """The worker's own loop without the platform around it: `Embedder.iter_embedded` on files read through the
    storage (its decoder thread beside the forward pass, steps of `model_batch_size`), no database, no Celery.
    Images per second (best of `repeats`) and CPU milliseconds per image: what the pipeline reaches at most with
    this decoder on this machine; the gap from it to the pipeline is the platform's (queries, writes, tasks)."""
    names = [field.name for field in fields]
    storage = fields[0].storage
    best, cpu = 0.0, []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        for _batch in embedder.iter_embedded(names, batch_size=embedder.model_batch_size,
                                             open_file=lambda name: storage.open(name, "rb")):
            pass
        best = max(best, len(names) / (time.perf_counter() - started))
        cpu.append((time.process_time() - cpu_started) / len(names) * 1000)
    return best, min(cpu)


def measure_parts(embedder, descriptors) -> dict:
    """Per-image milliseconds of the pipeline's parts, each alone on one thread."""
    import numpy as np
    from django.db import transaction

    from django.utils import timezone

    from ml.images import load_input_pixels, preprocess_array
    from recommender.models import Descriptor
    from recommender.services.embedding import store_vectors

    fields = [d.image_owner.image for d in descriptors]
    started = time.perf_counter()
    pixels = []
    for field in fields:  # as the worker's decoder thread does (the model normalises the pixels)
        with field.storage.open(field.name, "rb") as handle:
            pixels.append(load_input_pixels(handle, embedder.input_size, name=field.name))
    decode = (time.perf_counter() - started) / len(fields)
    arrays = [preprocess_array(p) for p in pixels]  # the limit: the model alone, on its float32 inputs
    vectors = np.concatenate([embedder.embed_batch(np.stack(arrays[i:i + 32])) for i in range(0, len(arrays), 32)])
    for descriptor, vector in zip(descriptors, vectors):
        descriptor.embedding = vector

    def write_time(write) -> float:
        started = time.perf_counter()
        with transaction.atomic():
            for start in range(0, len(descriptors), 32):
                write(descriptors[start:start + 32])
            transaction.set_rollback(True)  # measured only: the worker stores them for real below
        return (time.perf_counter() - started) / len(descriptors) * 1000

    return {
        "decode_ms": decode * 1000,
        "db_write_ms": write_time(lambda batch: store_vectors(batch, timezone.now())),
        "orm_write_ms": write_time(lambda batch: Descriptor.objects.bulk_update(batch, ["embedding"])),
        "arrays": arrays,
        "fields": fields,
    }


COPY_MARK = "bench copy "  # the original_name prefix of the extra Item rows of --copies


def set_item_copies(copies: int) -> int:
    """Brings the catalogue to `copies` rows per imported item: the extra rows share the item's stored file and
    category and differ in their sha256 (derived from the item's) and original_name (COPY_MARK, the copy's number,
    the item's name). Returns the number of extra rows.

    The copies are created a catalogue at a time (every item's first copy, then every item's second), so in id
    order, the order the reconciler sends pending rows in tasks of BATCH_SIZE, two rows on one file lie a
    catalogue apart and no task holds both: each copy is read, decoded and embedded on its own (a task decodes a
    file its own rows share once). check_no_task_shares_a_file checks it on the queued rows."""
    from recommender.models import Item

    originals = Item.objects.exclude(original_name__startswith=COPY_MARK)
    wanted = originals.count() * (copies - 1)
    extra = Item.objects.filter(original_name__startswith=COPY_MARK)
    extra.delete()  # made again each run (cheap), in the order below; the stored files stay (the originals' own)
    rows = (Item(image=item.image.name, category_id=item.category_id, category_source=item.category_source,
                 sha256=hashlib.sha256(f"{item.sha256}:{number}".encode()).hexdigest(),
                 original_name=f"{COPY_MARK}{number} of {item.original_name}"[:255])
            for number in range(1, copies) for item in originals.order_by("id").iterator())
    Item.objects.bulk_create(rows, batch_size=1000)
    return wanted


def check_no_task_shares_a_file(version) -> None:
    """Exits when two pending rows of one task (BATCH_SIZE rows in id order, as the reconciler sends them) are on
    one stored file: that task would decode and embed the file once for both, and the figures would flatter."""
    from recommender.models import Descriptor
    from recommender.services.embedding import BATCH_SIZE

    rows = (Descriptor.objects.filter(model_version=version, status=Descriptor.Status.PENDING).order_by("id")
            .values_list("snapshot__image", "item__image", "wardrobe_item__image"))
    names = [next(name for name in row if name) for row in rows.iterator()]
    for start in range(0, len(names), BATCH_SIZE):
        task = names[start:start + BATCH_SIZE]
        if len(set(task)) < len(task):
            sys.exit(f"rows {start}-{start + len(task) - 1} of the queue share a stored file: the bench would "
                     "measure one decode for several rows")


def run_worker(services, processes: int, total: int, job, data_dir: Path) -> dict:
    """Starts one real Celery worker on the queued descriptors (as `make run` does) and times it until every one is
    stored (and, for a re-embedding, until its job has switched the version). Returns what was measured."""
    from recommender.models import Descriptor, ReembedJob

    worker_log_path = data_dir / "bench-worker.log"
    with worker_log_path.open("w") as worker_log:
        worker = psutil.Process(services.spawn(
            "worker", launcher.worker_command(concurrency=processes, beat=False),
            stdout=worker_log, stderr=subprocess.STDOUT,
        ).pid)
        started = time.monotonic()
        peak, first_ready_at, ready, samples = 0, None, 0, []
        while ready < total:
            time.sleep(0.2)
            peak = max(peak, tree_rss(worker))
            ready = Descriptor.objects.exclude(status=Descriptor.Status.PENDING).count()
            samples.append((time.time(), ready))
            if ready and first_ready_at is None:
                first_ready_at = (time.monotonic(), ready)
                cpu_at_first, pg_at_first = tree_cpu(worker), postgres_cpu(data_dir)
            if ready < total:
                cpu_last, pg_last = tree_cpu(worker), postgres_cpu(data_dir)
            if time.monotonic() - started > 1800:
                raise SystemExit(f"timed out with {ready}/{total} descriptors done")
        finished = time.monotonic()
        active_at = None
        if job is not None:  # the worker builds the indexes and switches the version after its last batch
            while ReembedJob.objects.get(pk=job.pk).state == ReembedJob.State.RUNNING:
                time.sleep(0.2)
                if time.monotonic() - started > 1800:
                    raise SystemExit("the re-embedding job did not finish")
            active_at = time.monotonic()
            job.refresh_from_db()
        services.stop_service("worker")
    stored_after_first = total - first_ready_at[1]
    return {
        "started": started, "finished": finished, "first_ready_at": first_ready_at, "active_at": active_at,
        "peak": peak, "samples": samples, "log_text": worker_log_path.read_text(),  # complete: the worker stopped
        "steady": stored_after_first / (finished - first_ready_at[0]),
        "pipeline_cpu": (cpu_last - cpu_at_first) / stored_after_first * 1000,
        "server_cpu": (pg_last - pg_at_first) / stored_after_first * 1000,
    }


def print_rounds(rounds: list[tuple[float, float, dict]], limit_layout: str) -> None:
    """One line per round (its steady state against the mean of the limits measured just before and after it), then
    their median: on a machine whose speed swings from one minute to the next, one round's ratio is noise."""
    from statistics import median

    print(f"rounds (limit: {limit_layout}, measured just before and after each round):")
    ratios, busy_ratios = [], []
    for number, (before, after, run) in enumerate(rounds, 1):
        limit = (before + after) / 2
        ratios.append(run["steady"] / limit)
        busy = every_process_busy(run["log_text"], run["samples"])
        busy_text = ""
        if busy is not None:
            busy_ratios.append(busy[1] / busy[0] / limit)
            busy_text = f", every process busy {busy[1] / busy[0]:.1f} = {100 * busy_ratios[-1]:.0f} %"
        print(f"  round {number}: limit {limit:.1f} images/s (before {before:.1f}, after {after:.1f}); pipeline steady "
              f"state {run['steady']:.1f} = {100 * ratios[-1]:.0f} %{busy_text}; CPU a stored image: worker "
              f"{run['pipeline_cpu']:.1f} ms + Postgres {run['server_cpu']:.1f} ms")
    print(f"median over {len(rounds)} rounds: pipeline steady state {100 * median(ratios):.0f} % of the forward pass "
          f"(rounds from {100 * min(ratios):.0f} to {100 * max(ratios):.0f} %)"
          + (f"; every process busy {100 * median(busy_ratios):.0f} %" if busy_ratios else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="import only the first N files (0: all)")
    parser.add_argument("--model", type=Path, help="a trained model directory (default: the untrained Lite0)")
    parser.add_argument("--prepare", action="store_true",
                        help="import the sample catalogue into var/bench and stop (run it under nice -n 19)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the catalogue imported before (--prepare): only the descriptors are made anew")
    parser.add_argument("--reembed", action="store_true",
                        help="embed as a re-embedding (the version not active, its indexes built at the end)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --reuse --reembed: re-embed the catalogue this many times, each round beside the "
                             "limit measured just before and after it, and print every round and their median")
    parser.add_argument("--copies", type=int, default=1,
                        help="embed every catalogue item this many times (extra Item rows on the same file), so that "
                             "a round lasts N times as long")
    parser.add_argument("--worker-processes", type=int, default=launcher.embedding_processes(),
                        help="the worker's pool processes (default: as make run, fashionsite.launcher)")
    args = parser.parse_args()
    if args.rounds > 1 and not (args.reuse and args.reembed):
        parser.error("--rounds needs --reuse --reembed (each round re-embeds the catalogue imported before)")
    if args.copies < 1 or (args.copies > 1 and not args.reuse):
        parser.error("--copies needs --reuse and a count of at least 1 (it copies the catalogue imported before)")

    services = launcher.Services()
    try:
        launcher.ensure_postgres(services)
        launcher.ensure_redis(services, persistent=False)
        launcher.manage("migrate", "--no-input", "-v", "0")

        import django

        django.setup()
        from django.conf import settings

        from fashionsite.celery import app
        from ml.cores import intra_op_threads_for
        from ml.embedding import set_tf_threads
        from recommender.embedders import get_embedder
        from recommender.models import Descriptor, Item, Look, ModelVersion, ReembedJob
        from recommender.services.catalogue import entries_from_folder, import_entries
        from recommender.services.embedding import queue_embedding
        from recommender.services.reembedding import describe_missing_images, start_reembedding
        from recommender.services.versions import DEFAULT_VERSION, activate, missing_vector_indexes, register_version

        # the limit runs with the worker's TensorFlow thread pools (recommender.tasks.load_active_model)
        threads = (settings.WORKER_TF_INTRA_OP_THREADS, settings.WORKER_TF_INTER_OP_THREADS)
        set_tf_threads(*threads)
        app.control.purge()
        ReembedJob.objects.all().delete()
        Descriptor.objects.all().delete()
        reuse = args.reuse and Item.objects.exists()
        if not reuse:
            Look.objects.all().delete()
            Item.objects.all().delete()
        if args.model:
            from ml.embedding import load_embedder

            model_dir = args.model.resolve()
            version = register_version(f"bench-{model_dir.name}", str(model_dir),
                                       load_embedder(str(model_dir), settings.MODEL_CACHE_DIR).dim)
        else:
            version = register_version(**DEFAULT_VERSION)
        keep = [version.pk]
        if args.reembed:  # an active version without descriptors; the measured one is re-embedded
            placeholder = register_version("bench-placeholder", DEFAULT_VERSION["spec"], DEFAULT_VERSION["dim"])
            activate(placeholder)
            keep.append(placeholder.pk)
        else:
            activate(version)
        ModelVersion.objects.exclude(pk__in=keep).delete()  # only the measured version receives the images
        if reuse:  # with copies 1, a run after one with more removes the extra rows
            extra = set_item_copies(args.copies)
            if extra:
                print(f"{extra} extra Item rows (--copies {args.copies}) on the catalogue's files", flush=True)
        job = None
        if reuse and args.reembed:
            job = start_reembedding(version)  # pending rows for every image; the version's indexes dropped
            check_no_task_shares_a_file(version)
            queue_embedding(Descriptor.objects.filter(model_version=version).values_list("id", flat=True))
            print(f"re-embedding the catalogue imported before ({Item.objects.count()} items); vector indexes "
                  f"of {version.name} now: {3 - len(missing_vector_indexes(version.id))}", flush=True)
        elif reuse:
            # the imported catalogue, a pending descriptor per image, sent as an import sends them
            describe_missing_images(version)
            check_no_task_shares_a_file(version)
            queue_embedding(Descriptor.objects.filter(model_version=version).values_list("id", flat=True))
            print(f"reused the catalogue imported before ({Item.objects.count()} items)", flush=True)
        else:
            entries = entries_from_folder(sample_catalogue_dir())
            entries = entries[: args.limit] if args.limit else entries
            report = import_entries(entries, progress=True)
            print(report.summary(), flush=True)
            if args.prepare:
                return
        total = Descriptor.objects.count()
        print(f"{total} images to embed with {version.name} ({version.dim}-d)", flush=True)

        embedder = get_embedder(version)
        sample = list(Descriptor.objects.select_related("snapshot", "item").order_by("id")[:320])
        parts = measure_parts(embedder, sample)
        arrays, fields = parts.pop("arrays"), parts.pop("fields")
        loop_before, loop_cpu_before = measure_decode_and_forward(embedder, fields)
        limit_before, cpu_before = measure_limit(embedder, arrays)
        layouts = {"in this process": [(limit_before, cpu_before)]}
        pool_layout = f"{args.worker_processes} processes side by side, as the worker's pool"
        if args.worker_processes > 1:
            layouts[pool_layout] = [measure_limit_in_processes(version.spec, settings.MODEL_CACHE_DIR, arrays,
                                                               args.worker_processes)]

        data_dir = Path(settings.DATA_DIR)
        run = run_worker(services, args.worker_processes, total, job, data_dir)
        # the machine may be shared: the limit is measured before and after the pipeline, and the ratio uses
        # their mean (both are printed)
        layouts["in this process"].append(measure_limit(embedder, arrays))
        if args.worker_processes > 1:
            layouts[pool_layout].append(measure_limit_in_processes(version.spec, settings.MODEL_CACHE_DIR, arrays,
                                                                   args.worker_processes))
        loop_after, loop_cpu_after = measure_decode_and_forward(embedder, fields)
        # the limit is the faster layout's forward pass (mean of before and after), whichever the worker uses
        means = {name: tuple(sum(m[i] for m in runs) / len(runs) for i in (0, 1)) for name, runs in layouts.items()}
        limit_layout = max(means, key=lambda name: means[name][0])
        limit, forward_cpu = means[limit_layout]
        (limit_before, cpu_before), (limit_after, cpu_after) = layouts[limit_layout]
        failed = Descriptor.objects.filter(status=Descriptor.Status.FAILED).count()
        steady, started, finished = run["steady"], run["started"], run["finished"]
        first_ready_at, active_at = run["first_ready_at"], run["active_at"]
        pipeline_cpu, server_cpu, log_text = run["pipeline_cpu"], run["server_cpu"], run["log_text"]
        print(f"model: {version.name} ({version.dim}-d, {version.spec}); the worker: {args.worker_processes} pool "
              f"process(es), TensorFlow intra-op threads {intra_op_threads_for(args.worker_processes)} each; this "
              f"process: TensorFlow threads (intra-op, inter-op; 0: one per core) {threads}; load average now "
              f"(1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        for name, runs in layouts.items():
            print(f"the model's batched forward pass (batches of 32, decoded beforehand), {name}: "
                  f"{means[name][0]:.1f} images/s (before the pipeline {runs[0][0]:.1f}, after {runs[-1][0]:.1f}), "
                  f"CPU {means[name][1]:.1f} ms/image")
        print(f"limit, the faster of these ({limit_layout}): {limit:.1f} images/s")
        print(f"parts, one thread each: decode through the storage {parts['decode_ms']:.2f} ms/image, "
              f"database write {parts['db_write_ms']:.2f} ms/image (Django's bulk_update, the old way: "
              f"{parts['orm_write_ms']:.2f}), forward pass {1000 / limit:.2f} ms/image")
        loop, loop_cpu = (loop_before + loop_after) / 2, (loop_cpu_before + loop_cpu_after) / 2
        print(f"the worker's decode + forward loop alone, in this process (iter_embedded on {len(fields)} files "
              f"through the storage; no database, no Celery): {loop:.1f} images/s = {100 * loop / limit:.0f} % of "
              f"the limit (before {loop_before:.1f}, after {loop_after:.1f}); CPU {loop_cpu:.1f} ms/image "
              f"-> forward / loop = {100 * (cpu_before + cpu_after) / 2 / loop_cpu:.0f} %")
        print(f"images embedded and stored by the worker: {total} ({failed} failed)")
        print(f"wall time from worker start (includes model load): {finished - started:.1f} s "
              f"-> {total / (finished - started):.1f} images/s")
        print(f"pipeline steady state (first batch stored -> last): {steady:.1f} images/s "
              f"= {100 * steady / limit:.0f} % of the forward pass ({100 * steady / loop:.0f} % of the loop alone)")
        busy = every_process_busy(log_text, run["samples"])
        if busy is not None:
            busy_rate = busy[1] / busy[0]
            print(f"pipeline while every pool process had work (first rows stored -> the first process done with its "
                  f"last task: {busy[1]} images in {busy[0]:.1f} s; a long re-embedding runs so but for its last "
                  f"task): {busy_rate:.1f} images/s = {100 * busy_rate / limit:.0f} % of the forward pass")
        if job is not None:
            print(f"re-embedding job {job.state}; from the last row stored to the version active (its vector indexes "
                  f"built on every row meanwhile: {3 - len(missing_vector_indexes(version.id))} of 3): "
                  f"{active_at - finished:.1f} s; steady state + that: "
                  f"{(total - first_ready_at[1]) / (active_at - first_ready_at[0]):.1f} images/s = "
                  f"{100 * (total - first_ready_at[1]) / (active_at - first_ready_at[0]) / limit:.0f} % of the forward pass")
        print(f"CPU per image (user + system, all threads): forward pass {forward_cpu:.1f} ms (before {cpu_before:.1f}, "
              f"after {cpu_after:.1f}); the worker (main + pool, steady state) {pipeline_cpu:.1f} ms "
              f"-> forward / pipeline = {100 * forward_cpu / pipeline_cpu:.0f} %")
        print(f"CPU per image of the Postgres server meanwhile (the rows, their HNSW index): {server_cpu:.1f} ms "
              f"-> forward / (worker + Postgres) = {100 * forward_cpu / (pipeline_cpu + server_cpu):.0f} %")
        print(f"worker peak memory (RSS, main + pool): {run['peak'] / 2**20:.0f} MiB")
        task_seconds = [float(seconds) for _stamp, _process, seconds in TASK_DONE.findall(log_text)]
        if len(task_seconds) > 1:
            # the first task pays the model's warm-up; between tasks the worker waits on Celery only
            print(f"inside the embedding tasks (the first left out): {sum(task_seconds[1:]):.1f} s for "
                  f"{len(task_seconds) - 1} tasks; the steady state took {finished - first_ready_at[0]:.1f} s")
        if args.rounds > 1:
            rounds = [(limit_before, limit_after, run)]
            measure = (lambda: measure_limit(embedder, arrays)) if limit_layout == "in this process" else (
                lambda: measure_limit_in_processes(version.spec, settings.MODEL_CACHE_DIR, arrays,
                                                   args.worker_processes))
            for _ in tqdm(range(2, args.rounds + 1), desc="further rounds", unit="round"):
                before = measure()[0]
                # as the first round started: the placeholder active, the measured version with no descriptors
                activate(placeholder)
                Descriptor.objects.filter(model_version=version).delete()
                job = start_reembedding(version)
                check_no_task_shares_a_file(version)
                queue_embedding(Descriptor.objects.filter(model_version=version).values_list("id", flat=True))
                run = run_worker(services, args.worker_processes, total, job, data_dir)
                rounds.append((before, measure()[0], run))
            print_rounds(rounds, limit_layout)
    finally:
        services.stop()


if __name__ == "__main__":
    main()

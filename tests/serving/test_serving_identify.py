"""Identification against a gallery (issue 18), on the Trainer's real export of a tiny model:
`siamese-tfx gallery build` writes the next version under a served model's folder; the local
server, already running, hot-loads it and answers `identify` over real gRPC on 127.0.0.1 (the
client and the `identify` command); the SavedModel itself refuses hostile identify requests as
compare does, in-process, as tensorflow/serving runs it."""

from __future__ import annotations

import json
import os
import time

import grpc
import numpy as np
import pytest
import serving_fixtures as fx
from serving_fixtures import needs_local_server
from test_serving_hostile_requests import bomb_png

from siamese_tfx.components.contract import signatures

pytestmark = pytest.mark.slow

NAME = "siamese"
IDENTITIES = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def gallery_images() -> list[bytes]:
    return fx.encoded_images(6, seed=3)


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory, gallery_images) -> str:
    """Class folders: two exemplars of each identity (PNG, JPEG, BMP, GIF files)."""
    root = tmp_path_factory.mktemp("gallery")
    for i, image in enumerate(gallery_images):
        folder = root / IDENTITIES[i % 3]
        folder.mkdir(exist_ok=True)
        (folder / f"{i}.{('png', 'jpg', 'bmp', 'gif')[i % 4]}").write_bytes(image)
    return str(root)


@pytest.fixture(scope="module")
def stranger() -> bytes:
    """A blank image, unlike the random exemplars."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> str:
    """<base>/siamese/1: the Trainer's real export of a tiny untrained model."""
    needs_local_server()
    base = tmp_path_factory.mktemp("served")
    fx.build_exported_model(fx.version_dir(str(base), NAME, 1), NAME,
                            str(tmp_path_factory.mktemp("work")))
    return str(base)


@pytest.fixture(scope="module")
def server(model_base):
    from siamese_tfx.serving.config import ServerConfig
    from siamese_tfx.serving.server import start_server

    handle = start_server(ServerConfig(model_base=model_base, model_name=NAME, port=0,
                                       poll_interval_s=0.3, max_workers=4))
    try:
        yield handle
    finally:
        handle.stop(grace_s=1.0)


@pytest.fixture(scope="module")
def client(server):
    from siamese_tfx.serving.client import SiameseClient

    with SiameseClient(server.address, NAME, timeout=30.0) as c:
        yield c


@pytest.fixture(scope="module")
def built(model_base, gallery_dir, server, client, gallery_images, stranger) -> str:
    """Runs `siamese-tfx gallery build` on the served version 1 while the server serves it,
    with identify's threshold half the stranger's distance to its nearest exemplar (so the
    stranger is far outside it and every exemplar, at distance 0 of itself, within); returns
    the new version's folder once the server answers identify from it."""
    from siamese_tfx.pipeline.cli import main
    from siamese_tfx.serving.client import ServingError

    with pytest.raises(ServingError, match='signature key "identify" not found'):
        client.identify(gallery_images[:1])
    exemplars, (query,) = client.embed(gallery_images), client.embed([stranger])
    nearest = float(np.linalg.norm(exemplars - query, axis=1).min())
    assert nearest > 1e-3
    code = main(["gallery", "build", "--model", os.path.join(model_base, NAME),
                 "--gallery", gallery_dir, "--serving-dir", model_base, "--model-name", NAME,
                 "--top-k", "2", "--threshold", str(nearest / 2)])
    assert code == 0
    assert sorted(os.listdir(model_base)) == [NAME]  # no scratch folder left beside it
    deadline = time.monotonic() + 120
    while client.metadata().version != 2:
        assert time.monotonic() < deadline, "the server did not load version 2"
        time.sleep(0.2)
    return fx.version_dir(model_base, NAME, 2)


def test_identify_over_grpc_names_each_exemplar_and_calls_the_stranger_unknown(
        built, client, gallery_images, stranger):
    results = client.identify(gallery_images + [stranger], top_k=5)

    assert client.last_version == 2
    assert [r.label for r in results[:6]] == [IDENTITIES[i % 3] for i in range(6)]
    assert all(r.known and r.distances[0] < 1e-3 for r in results[:6])
    assert all(len(r.labels) == 2 for r in results)  # built with --top-k 2
    assert all(r.distances[0] <= r.distances[1] for r in results)
    assert all(r.similarities[0] >= 0.5 for r in results[:6])
    far = results[6]
    assert not far.known and far.label is None and far.similarities[0] < 0.5
    # Version 2 still compares and embeds as version 1 did.
    assert client.compare(gallery_images[0], gallery_images[0]).match
    assert client.embed(gallery_images[:2]).shape == (2, fx.EMBEDDING_DIM)


def test_identify_command_prints_the_verdicts(built, server, gallery_dir, capsys):
    from siamese_tfx.pipeline.cli import main

    images = [os.path.join(gallery_dir, "bob", "1.jpg"), os.path.join(gallery_dir, "carol",
                                                                      "2.bmp")]
    assert main(["identify", *images, "--server", server.address, "--model-name", NAME,
                 "--top-k", "1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == 2
    assert [r["label"] for r in answer["results"]] == ["bob", "carol"]
    assert all(len(r["candidates"]) == 1 for r in answer["results"])


def test_the_gallery_version_records_its_gallery(built, gallery_dir):
    from siamese_tfx.components.trainer import gallery

    record = gallery.read_gallery_record(built)
    entries = gallery.read_gallery(gallery_dir)
    assert record["gallery_version"] == 2
    assert record["gallery_fingerprint"] == gallery.fingerprint(
        entries, [gallery.read_image(e.path) for e in entries])
    assert (record["identities"], record["exemplars"], record["top_k"]) == (3, 6, 2)
    warmup = os.path.join(built, signatures.WARMUP_DIR, signatures.WARMUP_FILE)
    from siamese_tfx.serving.warmup import read_warmup_requests
    assert signatures.IDENTIFY in {log.predict_log.request.model_spec.signature_name
                                   for log in read_warmup_requests(warmup)}


def test_gallery_export_writes_the_rows_identify_searches(built, model_base, tmp_path, capfd):
    """What an approximate index is built from: version 2's stored rows, each exemplar's
    embedding as `embed` gives it, labelled as identify labels them."""
    from siamese_tfx.components.trainer import gallery
    from siamese_tfx.pipeline.cli import main

    output = tmp_path / "gallery"  # no .npz suffix: written where it was asked
    assert main(["gallery", "export", "--model", os.path.join(model_base, NAME),
                 "--output", str(output)]) == 0
    assert "6 vectors of 8 dimensions, 3 identities" in capfd.readouterr().out
    with np.load(str(output)) as exported:
        embeddings, identity = exported["embeddings"], exported["identity"]
        labels = list(exported["labels"])
        threshold = float(exported["identify_threshold"])
    record = gallery.read_gallery_record(built)
    assert labels == sorted(IDENTITIES) and threshold == pytest.approx(
        record["identify_threshold"])
    import tensorflow as tf

    loaded = tf.saved_model.load(built)
    entries = gallery.read_gallery(record["gallery_source"])
    expected = gallery.embed(loaded, [gallery.read_image(e.path) for e in entries])
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    assert [labels[i] for i in identity] == [e.label for e in entries]
    # A model without a gallery is refused, naming it.
    assert main(["gallery", "export", "--model", fx.version_dir(model_base, NAME, 1),
                 "--output", str(tmp_path / "none.npz")]) == 2
    assert "holds no gallery" in capfd.readouterr().err


def test_the_identify_graph_itself_refuses_bombs_and_batches_above_the_cap(
        built, gallery_images):
    """As tensorflow/serving runs the SavedModel: no server-side check in between."""
    import tensorflow as tf

    loaded = tf.saved_model.load(built)
    identify = loaded.signatures[signatures.IDENTIFY]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image\[1\]: PNG of 20000x20000 pixels"):
        identify(image=tf.constant(gallery_images[:1] + [bomb_png(20000, 20000)]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"identify: image holds 1025 images, above the model limit "
                             f"{signatures.MAX_BATCH_SIZE_ATTR}=1024"):
        identify(image=tf.constant(gallery_images[:1] * 1025))
    empty = identify(image=tf.constant([], tf.string))
    assert empty[signatures.LABELS].shape == (0, 2)


def test_identify_over_grpc_refuses_a_bomb(built, server, gallery_images):
    from siamese_tfx.serving.client import ServingError, SiameseClient

    with SiameseClient(server.address, NAME, timeout=10.0) as c:
        with pytest.raises(ServingError) as raised:
            c.identify([bomb_png(20000, 20000)])
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "PNG of 20000x20000 pixels" in raised.value.details


def test_evaluate_identification_counts_strangers_and_false_alarms(
        model_base, gallery_dir, stranger, tmp_path, capsys):
    """The exemplars as queries (each at distance 0 of itself) and one stranger, on version 1
    (calibrated threshold 0.5: the untrained model calls the stranger known)."""
    import shutil

    from siamese_tfx.pipeline.cli import main

    queries = tmp_path / "queries"
    shutil.copytree(gallery_dir, queries)
    (queries / "dave").mkdir()
    (queries / "dave" / "0.png").write_bytes(stranger)
    output = tmp_path / "metrics.json"
    assert main(["evaluate-identification", "--model", fx.version_dir(model_base, NAME, 1),
                 "--gallery", gallery_dir, "--queries", str(queries),
                 "--output", str(output)]) == 0
    metrics = json.loads(output.read_text())
    assert (metrics["mated_queries"], metrics["stranger_queries"]) == (6, 1)
    assert metrics["top1_accuracy"] == metrics["recall_at_1"] == 1.0
    assert metrics["false_alarm_rate_at_threshold"] == 1.0
    assert metrics["dir_at_far_0.01"] == 1.0  # below the stranger, above every exemplar
    assert "top5_accuracy" in capsys.readouterr().out


def test_a_gallery_rebuild_under_load_is_served_without_restart_or_failed_request(
        built, model_base, gallery_dir, server, client, gallery_images, stranger, tmp_path):
    """Four clients ask `identify` (each about 20 times a second) while `gallery build`, on the newest served
    version (the gallery model 2), enrols a fourth identity, dave (the stranger's image), as
    version 3. The same server process answers every request: by version 2 (dave unknown) while
    version 3 is built and loaded, then by version 3 (dave known), never back."""
    import shutil
    import threading

    from siamese_tfx.pipeline.cli import main
    from siamese_tfx.serving.client import SiameseClient

    enlarged = tmp_path / "gallery"
    shutil.copytree(gallery_dir, enlarged)
    (enlarged / "dave").mkdir()
    (enlarged / "dave" / "0.png").write_bytes(stranger)
    exemplars, (query,) = client.embed(gallery_images), client.embed([stranger])
    threshold = float(np.linalg.norm(exemplars - query, axis=1).min()) / 2
    stop, failures = threading.Event(), []
    answers: list[list[tuple[float, int, str | None]]] = [[] for _ in range(4)]

    def ask(i: int) -> None:
        with SiameseClient(server.address, NAME, timeout=30.0) as own:
            while not stop.is_set():
                try:
                    (result,) = own.identify([stranger], top_k=1)
                    answers[i].append((time.monotonic(), own.last_version, result.label))
                except Exception as error:  # every failure is a finding
                    failures.append(repr(error))
                stop.wait(0.05)  # light load: about 20 requests/s per client

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        while min(len(a) for a in answers) < 3:
            assert not failures, failures
            time.sleep(0.05)
        build_started = time.monotonic()
        assert main(["gallery", "build", "--model", os.path.join(model_base, NAME),
                     "--gallery", str(enlarged), "--serving-dir", model_base,
                     "--model-name", NAME, "--top-k", "2", "--threshold", str(threshold)]) == 0
        build_done = time.monotonic()
        deadline = time.monotonic() + 120
        while not all(a and a[-1][1] == 3 for a in answers):
            assert time.monotonic() < deadline, "the server did not load version 3"
            time.sleep(0.1)
        seen = [len(a) for a in answers]
        while any(len(a) < n + 3 for a, n in zip(answers, seen)):  # a few more from version 3
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert failures == [], failures[:5]
    assert client.metadata().version == 3  # the server started before version 2 serves 3
    for own in answers:
        versions = [version for _, version, _ in own]
        assert versions == sorted(versions) and versions[0] == 2 and versions[-1] == 3
        assert all(label is None for _, version, label in own if version == 2)
        assert all(label == "dave" for _, version, label in own if version == 3)
    # The old version kept answering while the new one was built (and loaded).
    during_build = [t for own in answers for t, version, _ in own
                    if version == 2 and build_started < t < build_done]
    assert during_build, "no request was answered while the gallery was rebuilt"
    with open(os.path.join(fx.version_dir(model_base, NAME, 3), "assets",
                           signatures.GALLERY_ASSET)) as f:
        record = json.load(f)
    print(f"rebuild under load: {sum(map(len, answers))} requests answered, "
          f"{len(during_build)} while building ({build_done - build_started:.1f} s), "
          f"version 3 served {time.monotonic() - build_done:.1f} s after the build")
    assert (record["gallery_version"], record["identities"]) == (3, 4)


def test_oneshot_answers_through_identify_as_compare_does(model_base, gallery_images, tmp_path,
                                                          capsys):
    """`oneshot` on a Lake-format run, with the Trainer's real export (euclidean head): the
    answers are identify's top-1 over the run's exemplars as the gallery, and they are
    compare's nearest exemplars, query by query. Queries 1-3 are the exemplars themselves
    (right by construction), 4-6 other images with arbitrary answers."""
    from siamese_tfx.pipeline import quality

    run = tmp_path / "runs" / "run01"
    (run / "training").mkdir(parents=True)
    (run / "test").mkdir()
    lines = []
    for i, image in enumerate(gallery_images):
        (run / "test" / f"item{i + 1:02d}.png").write_bytes(image)
        lines.append(f"test/item{i + 1:02d}.png training/class{i % 3 + 1:02d}.png")
        if i < 3:
            (run / "training" / f"class{i + 1:02d}.png").write_bytes(image)
    (run / "class_labels.txt").write_text("\n".join(lines) + "\n")

    summary = quality.oneshot(fx.version_dir(model_base, NAME, 1), str(tmp_path / "runs"))
    assert summary["through"] == "identify"
    assert summary["queries_where_identify_differs"] == 0
    assert summary["accuracy"] == summary["compare_accuracy"] >= 0.5
    assert summary["runs_where_identify_equals_compare"] == 1
    result = quality.oneshot_run(quality.load_model(fx.version_dir(model_base, NAME, 1)),
                                 str(run))
    assert result.predicted[:3] == ["training/class01.png", "training/class02.png",
                                    "training/class03.png"]
    assert result.predicted == result.compare_predicted
    assert "(through identify)" in capsys.readouterr().out

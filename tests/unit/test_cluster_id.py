"""KRaft cluster ids the local stacks format Kafka with."""
import base64

from services.common.localstack import random_cluster_id


def test_cluster_ids_are_uuids_in_url_safe_base64_that_never_start_with_a_dash():
    ids = [random_cluster_id() for _ in range(2000)]  # a dash would lead about 31 of them
    assert not [cid for cid in ids if cid.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(cid + "==")) == 16 for cid in ids)
    assert len(set(ids)) == len(ids)

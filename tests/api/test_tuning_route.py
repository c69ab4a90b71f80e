"""``POST /admin/api/models/{id}/tuning`` stores what ``alize models tune`` measured on the card
(shown by the admin API), and refuses a variant file that is not the model's."""

from __future__ import annotations

from pathlib import Path

from tests.deployments.test_tuning import _tuning
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.support.apps import scripted_client

from alize.catalog.variants import write_variant


def test_a_tuning_is_stored_on_the_card_and_a_foreign_variant_refused(tmp_path: Path) -> None:
    source = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    other = write_tiny_llama_gguf(tmp_path / "other.gguf", n_head_kv=2)
    variant = write_variant(source, tmp_path / "tiny.Q8_0.gguf", "Q8_0").path
    with scripted_client(tmp_path / "data") as client:
        assert client.post("/admin/api/models", json={"path": str(source), "id": "tiny"}).status_code == 201
        refused = client.post("/admin/api/models/tiny/tuning", json=_tuning(other).model_dump(mode="json"))
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "variant_path"
        stored = client.post("/admin/api/models/tiny/tuning", json=_tuning(variant).model_dump(mode="json"))
        assert stored.status_code == 200, stored.text
        card = client.get("/admin/api/models/tiny").json()
        assert card["tuning"]["variant_path"] == str(variant)
        assert card["tuning"]["settings"]["kv_cache_type"] == "q8_0"
        bad = client.post("/admin/api/models/tiny/tuning", json={"settings": {"threads": 0}})
        assert bad.status_code == 422 and set(bad.json()["error"]) >= {"message", "type", "param", "code"}

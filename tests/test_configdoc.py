"""docs/config.md is the configuration reference generated from proxy/config.py."""

from __future__ import annotations

import pathlib

from proxy import config
from tfgate_dev import configdoc

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _keys(model, path=""):
    """Every key path the schema declares, as configdoc spells them."""
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        yield key
        for suffix, sub in configdoc._sections(field.annotation):
            yield from _keys(sub, key + suffix)


class TestConfigDoc:
    def test_docs_config_md_is_up_to_date(self):
        """The committed reference matches the schema; if not, run `make docs`."""
        assert DOC.exists(), "docs/config.md is missing: run `make docs`"
        assert DOC.read_text() == configdoc.render(), (
            "docs/config.md is stale: run `make docs` and commit the result")

    def test_every_key_is_documented_with_a_description(self):
        """Each key of the schema has a row, and no row has an empty description."""
        text = configdoc.render()
        for key in _keys(config.Config):
            rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
            assert len(rows) == 1, key
            assert not rows[0].rstrip().endswith("|  |"), f"{key} has no description"

    def test_type_names(self):
        """Annotations read as a user would write them."""
        assert configdoc.type_name(list[str]) == "list of str"
        assert configdoc.type_name(dict[str, config.Upstream]) == "map of name → section"
        assert configdoc.type_name(config.FilePath | None) == "file path \\| null"
        assert configdoc.type_name(config.ListenTLS) == "section"

    def test_defaults(self):
        """Required keys, factories and sizes are shown plainly."""
        fields = config.Listen.model_fields
        assert configdoc.default_text(config.Upstream.model_fields["address"]) == "required"
        assert configdoc.default_text(fields["max_message_bytes"]) == "`67108864` (64 MiB)"
        assert configdoc.default_text(config.Rule.model_fields["versions"]) == '`["*"]`'
        assert configdoc.default_text(config.Config.model_fields["policy"]) == "(section)"

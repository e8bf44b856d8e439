"""Text from users or errors on a page: shown as text, never as markup."""
import re

# the characters that make Markdown or HTML (links, images, tags, entities, emphasis, code, tables, headings)
_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+!|~<>&])")


def escape(text) -> str:
    """`text` for a Markdown pane, shown as typed: every character that makes markup backslash-escaped, so a crafted
    value (`[x](http://...)`, `![](...)`, `<img ...>`, `**`, `&lt;`) is neither a link, an image, a tag, emphasis
    nor an entity. Use with renderer_options={"linkify": False} where the text may hold a bare URL."""
    return _PUNCTUATION.sub(r"\\\1", str(text))

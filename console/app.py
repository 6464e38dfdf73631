"""The console's Streamlit entry point: ``promoter console`` runs ``streamlit run`` on this file.

Pages are :mod:`console.views` modules; :func:`show_page` renders one alone (what the tests drive).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import streamlit as st
from pydantic import ValidationError
from pydantic_settings import SettingsError

from console.page_support import ConsoleConfig
from console.views import dead_letters, history, serving, try_model
from runtime.logging import configure_logging
from runtime.service_help import settings_classes_of
from runtime.settings_errors import invalid_settings


class ConsolePage(NamedTuple):
    title: str
    render: Callable[[ConsoleConfig], None]


#: url path -> page, in the order of the navigation.
PAGES: dict[str, ConsolePage] = {
    "try": ConsolePage(try_model.TITLE, try_model.render),
    "serving": ConsolePage(serving.TITLE, serving.render),
    "history": ConsolePage(history.TITLE, history.render),
    "dead-letters": ConsolePage(dead_letters.TITLE, dead_letters.render),
}


@st.cache_resource
def _logging_configured() -> bool:
    configure_logging("console")
    return True


def _config() -> ConsoleConfig | None:
    try:
        return ConsoleConfig.from_env()
    except (ValidationError, SettingsError):
        problems = invalid_settings(settings_classes_of(ConsoleConfig))
        if not problems:
            raise
        for problem in problems:
            st.error(str(problem))
        return None


def _page(page: ConsolePage, config: ConsoleConfig) -> Callable[[], None]:
    def show() -> None:
        page.render(config)

    return show


def show_page(url_path: str) -> None:
    """Render one page without the navigation."""
    config = _config()
    if config is not None:
        PAGES[url_path].render(config)


def main() -> None:
    st.set_page_config(page_title="model-promoter console", layout="wide")
    _logging_configured()
    config = _config()
    if config is None:
        return
    pages = [st.Page(_page(page, config), title=page.title, url_path=path) for path, page in PAGES.items()]
    st.navigation(pages).run()


if __name__ == "__main__":
    main()

"""The HTTP door of `rnnmt serve`: JSON over HTTP, LibreTranslate's API and a page to try it."""

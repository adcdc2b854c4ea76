"""The web server and page (installed as ``image_search.webui``)."""

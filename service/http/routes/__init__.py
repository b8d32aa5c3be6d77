"""The routers of the HTTP app, one per subject; ``service.http.app`` assembles them."""

"""The contactsync server: FastAPI app, services, storage and the event bus."""

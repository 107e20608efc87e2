"""The Wyoming protocol front end (Home Assistant's voice pipeline): events in, the recognition core, events out."""

"""`python -m services.ingest.bridge_main` (`mom run ingest-bridge`): the MQTT and OPC UA bridges as a process."""
from services.ingest.bridge import main

if __name__ == "__main__":
    main()

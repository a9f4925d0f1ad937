"""`python -m services.inventory`: run one inventory worker."""
from services.common.runtime import run_service
from services.inventory.app import build
from services.inventory.settings import from_env

if __name__ == "__main__":
    run_service(from_env(), build)

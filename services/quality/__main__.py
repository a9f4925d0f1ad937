"""`python -m services.quality`: run one quality worker."""
from services.common.runtime import run_service
from services.quality.app import build
from services.quality.settings import from_env

if __name__ == "__main__":
    run_service(from_env(), build)

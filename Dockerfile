# First version: the service on CPU. Build from the repository root:
#   docker build -t mnist-serve . && docker run --rm -p 8080-8082:8080-8082 mnist-serve
# The key file is written inside the container: docker exec <id> cat /srv/key_file.json
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY model/ model/
COPY handler/ handler/
COPY ops/ ops/
COPY model-config.yaml config.properties log4j2.xml ./
RUN python -m ops.build_archive --export-path model_store \
 # Inside a container the published ports must listen on all interfaces.
 && sed 's#http://127.0.0.1:#http://0.0.0.0:#' config.properties > config.container.properties \
 && useradd --create-home serve && chown -R serve /srv
USER serve

EXPOSE 8080 8081 8082
CMD ["torchserve", "--start", "--foreground", "--ncs", "--ts-config", "config.container.properties"]

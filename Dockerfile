FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shadow shadow
COPY proxy proxy
COPY subscriber subscriber
COPY comparer comparer
RUN pip install --no-cache-dir '.[fast]'
ENTRYPOINT ["shadow"]

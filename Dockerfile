# One image for the three programs: `ambit control`, `ambit agent`, `ambit waypoint` (and `ambit cni`).
#   docker build -t ghcr.io/ambit-mesh/ambit:0.1.0 .
# Stage 1 builds the native addon (against Node's own OpenSSL and nghttp2 headers; libnghttp2-dev only
# for the header) and the TypeScript; stage 2 is a slim Node image with the tools the agent runs
# (nft from nftables, ip from iproute2; nsenter comes with util-linux, part of every Debian image).
# Both stages use the same Node image tag, so the addon is built for the Node that runs it.
ARG NODE_IMAGE=node:20-bookworm

FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ libnghttp2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# node-gyp compiles against the headers the Node image ships (/usr/local/include/node) instead of
# downloading them: the build works on builders without network access beyond the base images
ENV npm_config_nodedir=/usr/local
# dependencies and the addon first: this layer is rebuilt only when they change
COPY package.json package-lock.json ./
COPY .ci/preinstall .ci/preinstall
COPY native native
RUN npm ci
COPY tsconfig.json ./
COPY src src
COPY test test
COPY bench bench
COPY scripts scripts
# the CNI plugin the agent installs on each node, bundled into one file (esbuild, a dev dependency)
RUN npx tsc -p tsconfig.json && npm run bundle-cni && npm prune --omit=dev

FROM ${NODE_IMAGE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iproute2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
# package.json: "type": "module" and the version `ambit --version` prints
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
# the addon is found by walking up from dist/src/native to native/build/Release/ambit_native.node
COPY --from=build /src/native/build/Release/ambit_native.node native/build/Release/ambit_native.node
COPY --from=build /src/dist/src dist/src
# the agent copies it into the node's CNI bin dir (src/node-agent/enrol/cni-install.ts, CNI_BUNDLE_RELATIVE)
COPY --from=build /src/dist/cni dist/cni
# read at run time from the package root (src/xds/schema.ts)
COPY --from=build /src/src/xds/proto src/xds/proto
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
CMD ["--help"]

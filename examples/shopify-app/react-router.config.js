// React Router framework settings: server rendering on, as in Shopify's app template.
/** @type {import("@react-router/dev/config").Config} */
export default {
  ssr: true,
};

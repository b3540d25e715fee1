// npm's `libretranslate` client, unchanged, against the server at process.argv[2]: prints the JSON of
// what it returns for the query in process.argv[3] (source auto, target en).
const { translate } = require("libretranslate");

translate({ query: process.argv[3], source: "auto", target: "en", apiurl: process.argv[2] })
  .then((text) => console.log(JSON.stringify(text)))
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });

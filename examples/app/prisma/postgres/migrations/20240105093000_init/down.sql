-- DropForeignKey
ALTER TABLE "OperatorSession" DROP CONSTRAINT "OperatorSession_shopId_fkey";

-- DropTable
DROP TABLE "OperatorSession";

-- DropTable
DROP TABLE "Shop";
